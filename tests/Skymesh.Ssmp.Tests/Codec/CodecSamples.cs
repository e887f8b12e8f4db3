using System.Text;

namespace Skymesh.Ssmp.Tests.Codec;

/// <summary>Wire samples shared by the codec tests; each is built from the grammar, not from our output.</summary>
internal static class CodecSamples
{
    public static byte[] B(string latin1) => Encoding.Latin1.GetBytes(latin1);

    public static byte[] Concat(params byte[][] parts) => parts.SelectMany(p => p).ToArray();

    public static string Repeat(char c, int n) => new(c, n);

    /// <summary>Binary payload on the wire for <paramref name="content"/>: LENHI LENLO content.</summary>
    public static byte[] Binary(byte[] content)
    {
        var n = content.Length - 1;
        return Concat([(byte)(n >> 8), (byte)n], content);
    }
}
