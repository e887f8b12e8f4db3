using System.Runtime.Versioning;
using System.Text;

namespace Skymesh.Identity.Tests;

/// <summary>Real files in a fresh temporary directory per test. The permission rules are Unix ones.</summary>
[UnsupportedOSPlatform("windows")]
public sealed class NodeKeyFileTests : IDisposable
{
    // bip-0340 test vector 1's secret and public key.
    private const string Secret = "b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfef";
    private const string Address = "dff1d77f2a671c5f36183726db2341be58feae1da2deced843240f7b502ba659";

    private readonly string _directory = Directory.CreateTempSubdirectory("skymesh-identity-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private string PathOf(string name) => Path.Combine(_directory, name);

    private string Write(string name, string content, UnixFileMode mode = UnixFileMode.UserRead | UnixFileMode.UserWrite)
    {
        var path = PathOf(name);
        File.WriteAllText(path, content);
        File.SetUnixFileMode(path, mode);
        return path;
    }

    private static string Good(string secret = Secret, string address = Address) =>
        $"skymesh-node-key 1\n# comment\naddress {address}\nsecret {secret}\n";

    private static NodeKeyFileException Refused(string path)
    {
        var e = Assert.Throws<NodeKeyFileException>(() => NodeKeyFile.Load(path));
        Assert.StartsWith($"Node key file '{path}' ", e.Message, StringComparison.Ordinal);
        Assert.Equal(path, e.Path);
        Assert.DoesNotContain(Secret, e.Message, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain(Secret[..16], e.Message, StringComparison.OrdinalIgnoreCase);
        return e;
    }

    [Fact]
    public void The_first_run_creates_an_owner_only_key_file_in_a_new_directory()
    {
        var path = Path.Combine(_directory, "state", "node", "node.key");
        using var key = NodeKeyFile.LoadOrCreate(path, out var created);
        Assert.True(created);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.GetDirectoryName(path)!));
        var lines = File.ReadAllLines(path);
        Assert.Equal("skymesh-node-key 1", lines[0]);
        Assert.Contains($"address {key.Address}", lines);
        Assert.Single(Directory.GetFiles(Path.GetDirectoryName(path)!));
    }

    [Fact]
    public void A_created_key_loads_back_with_the_same_address_and_signs_for_it()
    {
        var path = PathOf("node.key");
        NodeAddress address;
        using (var created = NodeKeyFile.LoadOrCreate(path))
            address = created.Address;

        using var loaded = NodeKeyFile.Load(path);
        Assert.Equal(address, loaded.Address);
        Assert.True(address.Verify("link-hello", [1, 2, 3], loaded.Sign("link-hello", [1, 2, 3])));

        using var again = NodeKeyFile.LoadOrCreate(path, out var createdAgain);
        Assert.False(createdAgain);
        Assert.Equal(address, again.Address);
    }

    [Fact]
    public void A_hand_written_file_loads_to_the_address_of_its_secret()
    {
        var path = Write("node.key", Good());
        using var key = NodeKeyFile.Load(path);
        Assert.Equal(Address, key.Address.ToString());
    }

    [Fact]
    public void Windows_line_ends_upper_case_hex_and_no_address_line_are_accepted()
    {
        var path = Write("node.key", $"skymesh-node-key 1\r\n\r\nsecret {Secret.ToUpperInvariant()}  \r\n");
        using var key = NodeKeyFile.Load(path);
        Assert.Equal(Address, key.Address.ToString());
    }

    [Theory]
    [InlineData(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead, "0640")]
    [InlineData(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead, "0644")]
    [InlineData(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherWrite, "0602")]
    public void A_file_that_group_or_others_can_access_is_refused_with_the_chmod_fix(UnixFileMode mode, string octal)
    {
        var path = Write("node.key", Good(), mode);
        var e = Refused(path);
        Assert.Contains($"group or others (mode {octal})", e.Message, StringComparison.Ordinal);
        Assert.Contains($"chmod 600 '{path}'", e.Message, StringComparison.Ordinal);

        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        using var key = NodeKeyFile.Load(path);
        Assert.Equal(Address, key.Address.ToString());
    }

    [Fact]
    public void A_missing_file_is_reported_as_missing()
    {
        var e = Refused(PathOf("absent.key"));
        Assert.EndsWith("does not exist.", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_directory_in_place_of_the_file_is_reported()
    {
        var path = PathOf("node.key");
        Directory.CreateDirectory(path);
        Assert.Contains("is a directory", Refused(path).Message, StringComparison.Ordinal);
        Assert.Throws<NodeKeyFileException>(() => NodeKeyFile.LoadOrCreate(path));
    }

    public static TheoryData<string, string, string> CorruptFiles => new()
    {
        { "empty", "", "is empty" },
        { "bad header", $"skymesh-node-key one\nsecret {Secret}\n", "has a bad first line; expected 'skymesh-node-key 1'" },
        { "newer version", $"skymesh-node-key 2\nsecret {Secret}\n", "format version 2, written by a newer Skymesh" },
        { "no secret", $"skymesh-node-key 1\naddress {Address}\n", "has no 'secret' line" },
        { "short secret", $"skymesh-node-key 1\nsecret {Secret[..62]}\n", "has a secret of 62 characters on line 2; a secret is 64 hex digits" },
        { "long secret", $"skymesh-node-key 1\nsecret {Secret}00\n", "has a secret of 66 characters on line 2" },
        { "bad hex", $"skymesh-node-key 1\nsecret {Secret[..10]}zz{Secret[12..]}\n", "whose character 11 is not a hex digit" },
        { "zero secret", $"skymesh-node-key 1\nsecret {new string('0', 64)}\n", "holds an invalid secret: it is zero or not below the secp256k1 group order" },
        { "secret = n", "skymesh-node-key 1\nsecret FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141\n", "holds an invalid secret" },
        { "two secrets", $"skymesh-node-key 1\nsecret {Secret}\nsecret {Secret}\n", "more than one secret line (lines 2 and 3)" },
        { "wrong address", Good(address: "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9"), $"that is not the address of its secret ({Address})" },
        { "unknown line", $"skymesh-node-key 1\n{Secret}\n", "a line 2 that is neither" },
        { "binary after header", $"skymesh-node-key 1\nsecret {Secret}\n\0\0", "contains bytes that are not text" },
    };

    [Theory]
    [MemberData(nameof(CorruptFiles))]
    public void A_corrupt_file_is_refused_with_what_is_wrong(string name, string content, string problem)
    {
        var path = Write("node.key", content);
        var e = Refused(path);
        Assert.True(e.Message.Contains(problem, StringComparison.Ordinal), $"{name}: {e.Message}");
    }

    public static TheoryData<string, string, string> ForeignFiles => new()
    {
        { "PEM EC key", "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBJ0sDs=\n-----END EC PRIVATE KEY-----\n", "is a PEM file (EC PRIVATE KEY), not a Skymesh node key" },
        { "PEM certificate", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "is a PEM file (CERTIFICATE), not a Skymesh node key" },
        { "OpenSSH private key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n", "is an SSH private key, not a Skymesh node key" },
        { "SSH public key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk user@host\n", "is an SSH public key, not a Skymesh node key" },
        { "bare secret", $"{Secret}\n", "does not start with 'skymesh-node-key 1'; it is not a Skymesh node key" },
        { "JSON", "{\"privateKey\": \"x\"}\n", "does not start with 'skymesh-node-key 1'; it is not a Skymesh node key" },
        { "binary", "\u0001\u0002\u0003\u0000garbage", "is not a text file; it is not a Skymesh node key" },
    };

    [Theory]
    [MemberData(nameof(ForeignFiles))]
    public void A_foreign_file_is_refused_as_not_a_skymesh_node_key(string name, string content, string problem)
    {
        var path = Write("node.key", content);
        var e = Refused(path);
        Assert.True(e.Message.Contains(problem, StringComparison.Ordinal), $"{name}: {e.Message}");
    }

    [Fact]
    public void A_large_file_is_refused_without_being_read()
    {
        var path = Write("node.key", Good() + new string('#', 100_000));
        Assert.Contains("far more than a node key file", Refused(path).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadOrCreate_never_replaces_a_bad_file()
    {
        var content = $"skymesh-node-key 1\nsecret {Secret[..40]}\n";
        var path = Write("node.key", content);
        Assert.Throws<NodeKeyFileException>(() => NodeKeyFile.LoadOrCreate(path));
        Assert.Equal(content, File.ReadAllText(path));
        Assert.Single(Directory.GetFiles(_directory));
    }

    [Fact]
    public void Two_nodes_starting_at_once_on_one_path_get_the_same_key()
    {
        // Several rounds, each on a fresh path with its creators released together, so that a window between
        // "no file yet" and "my file is in place" is hit in a single run if there is one.
        const int rounds = 10;
        const int creators = 4;
        for (var round = 0; round < rounds; round++)
        {
            var path = PathOf($"node-{round}.key");
            var addresses = new NodeAddress[creators];
            var created = new bool[creators];
            var errors = new Exception?[creators];
            using var start = new Barrier(creators);
            var threads = Enumerable.Range(0, creators).Select(i => new Thread(() =>
            {
                try
                {
                    start.SignalAndWait();
                    using var key = NodeKeyFile.LoadOrCreate(path, out created[i]);
                    addresses[i] = key.Address;
                }
                catch (Exception e)
                {
                    errors[i] = e;
                }
            })).ToArray();
            foreach (var thread in threads)
                thread.Start();
            foreach (var thread in threads)
                Assert.True(thread.Join(TimeSpan.FromSeconds(30)), "a creator did not finish");

            Assert.All(errors, Assert.Null);
            Assert.All(addresses, a => Assert.Equal(addresses[0], a));
            Assert.Equal(1, created.Count(c => c)); // exactly one of them generated the key on the disk
            using var loaded = NodeKeyFile.Load(path);
            Assert.Equal(addresses[0], loaded.Address);
        }
        // No temporary file is left behind: only the key files.
        Assert.Equal(rounds, Directory.GetFiles(_directory).Length);
        Assert.Empty(Directory.GetFiles(_directory, ".*"));
    }

    [Fact]
    public void The_file_holds_the_secret_as_written_in_the_docs()
    {
        var path = Write("node.key", Good());
        using (NodeKeyFile.Load(path))
        {
        }
        var created = PathOf("new.key");
        using var key = NodeKeyFile.LoadOrCreate(created);
        var text = File.ReadAllText(created, Encoding.ASCII);
        Assert.Matches("^skymesh-node-key 1\n(#[^\n]*\n)*address [0-9a-f]{64}\nsecret [0-9a-f]{64}\n$", text);
    }
}
