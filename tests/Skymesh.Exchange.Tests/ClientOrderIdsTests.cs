using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Tests;

public sealed class ClientOrderIdsTests
{
    [Theory]
    [InlineData(1, 7)]
    [InlineData(37, 11)]
    [InlineData(1000, 3)]
    public void The_table_remembers_exactly_what_a_dictionary_with_an_age_queue_would(int capacity, int seed)
    {
        var random = new Random(seed);
        var table = new ClientOrderIds(capacity);
        var reference = new Dictionary<(int, string), long>();
        var age = new Queue<(int, string)>();
        for (var step = 0; step < 20_000; step++)
        {
            var owner = random.Next(4);
            // Short ids from a small alphabet repeat often; long ones fill the ring of text and make it grow and wrap.
            var id = new string([.. Enumerable.Range(0, random.Next(1, random.Next(2) == 0 ? 4 : 65)).Select(_ => (char)('a' + random.Next(3)))]);
            var found = table.TryGet(owner, id, out var order);
            Assert.Equal(reference.TryGetValue((owner, id), out var expected), found);
            if (found)
            {
                Assert.Equal(expected, order);
                continue;
            }
            if (age.Count >= capacity)
                reference.Remove(age.Dequeue());
            reference.Add((owner, id), step);
            age.Enqueue((owner, id));
            table.Add(owner, id, step);
            Assert.Equal(age.Count, table.Count);
        }
        var k = 0;
        foreach (var (owner, id) in age)
        {
            Assert.Equal(id, new string(table.At(k++, out var o, out var order)));
            Assert.Equal((owner, reference[(owner, id)]), (o, order));
        }
    }
}
