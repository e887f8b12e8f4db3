namespace Skymesh.Bench;

/// <summary>The benchmark cannot run or cannot go on; the message says why and what to do.</summary>
public sealed class BenchException : Exception
{
    public BenchException(string message)
        : base(message)
    {
    }

    public BenchException()
    {
    }

    public BenchException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
