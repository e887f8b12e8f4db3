using System.Text;
using System.Text.Json;

namespace Skymesh.Bench;

/// <summary>A bench's final JSON line: fields in the order added; numbers that are not finite are written as null.</summary>
internal sealed class JsonLine
{
    private readonly List<(string Key, object? Value)> _fields = [];

    public void Add(string key, object? value) => _fields.Add((key, value));

    public void Add(string key, double? value, int digits) => _fields.Add((key, value is { } v && double.IsFinite(v) ? Math.Round(v, digits) : null));

    public object? Get(string key) => _fields.LastOrDefault(f => f.Key == key).Value;

    public string ToJson()
    {
        using var stream = new MemoryStream();
        using (var json = new Utf8JsonWriter(stream))
        {
            json.WriteStartObject();
            foreach (var (key, value) in _fields)
            {
                json.WritePropertyName(key);
                JsonSerializer.Serialize(json, value is double d && !double.IsFinite(d) ? null : value);
            }
            json.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }
}
