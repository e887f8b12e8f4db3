using System.Globalization;
using System.Text;

namespace Skymesh.Sim;

/// <summary>
/// <c>skymesh sim --plot FILE.svg</c>: two charts one above the other, sharing the virtual-time axis — the share of
/// sampled pairs that can open a path, and the control traffic per node — with labelled axes, readable in a browser.
/// </summary>
public static class SvgPlot
{
    private const int Width = 720;
    private const int PanelHeight = 220;
    private const int Left = 70;
    private const int Right = 20;
    private const int Top = 40;
    private const int Gap = 70;

    public static string Render(SimReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var samples = report.Samples;
        var maxT = Math.Max(samples.Count == 0 ? 1 : samples[^1].Seconds, 1e-3);
        // Control traffic between samples, per node and second.
        var rates = new List<(double T, double Rate)>();
        for (var i = 1; i < samples.Count; i++)
        {
            var dt = samples[i].Seconds - samples[i - 1].Seconds;
            if (dt > 0)
                rates.Add((samples[i].Seconds, (samples[i].ControlBytes - samples[i - 1].ControlBytes) / dt / report.Nodes));
        }
        var maxRate = Math.Max(1, rates.Count == 0 ? 1 : rates.Max(r => r.Rate));
        var height = Top + 2 * PanelHeight + Gap + 50;
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        svg.Append("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
        svg.Append(CultureInfo.InvariantCulture,
            $"<text x=\"{Width / 2}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{Escape($"{report.Nodes:N0} nodes, {report.Topology}, {report.Scenario}, seed {report.Seed}")}</text>\n");
        Panel(svg, Top, "reachable pairs (%)", 100, samples.Select(s => (s.Seconds, s.Reachability * 100)).ToList(), maxT, "#1f77b4");
        Panel(svg, Top + PanelHeight + Gap, "control traffic (bytes/s per node)", maxRate, rates, maxT, "#d62728");
        svg.Append("</svg>\n");
        return svg.ToString();
    }

    private static void Panel(StringBuilder svg, int top, string label, double maxY, List<(double X, double Y)> points, double maxX, string colour)
    {
        var plotWidth = Width - Left - Right;
        double X(double x) => Left + x / maxX * plotWidth;
        double Y(double y) => top + PanelHeight - y / maxY * PanelHeight;
        svg.Append(CultureInfo.InvariantCulture, $"<rect x=\"{Left}\" y=\"{top}\" width=\"{plotWidth}\" height=\"{PanelHeight}\" fill=\"none\" stroke=\"#888\"/>\n");
        for (var i = 0; i <= 4; i++)
        {
            var y = maxY * i / 4;
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left - 4}\" x2=\"{Left + plotWidth}\" y1=\"{Y(y):0.#}\" y2=\"{Y(y):0.#}\" stroke=\"#ddd\"/>");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Left - 8}\" y=\"{Y(y) + 4:0.#}\" text-anchor=\"end\">{y:0.##}</text>\n");
            var x = maxX * i / 4;
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{X(x):0.#}\" y=\"{top + PanelHeight + 16}\" text-anchor=\"middle\">{x:0.##}</text>\n");
        }
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Left + plotWidth / 2}\" y=\"{top + PanelHeight + 34}\" text-anchor=\"middle\">virtual time since every link came up (s)</text>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<text transform=\"translate(16,{top + PanelHeight / 2}) rotate(-90)\" text-anchor=\"middle\">{Escape(label)}</text>\n");
        if (points.Count == 0)
            return;
        svg.Append(CultureInfo.InvariantCulture, $"<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"");
        foreach (var (x, y) in points)
            svg.Append(CultureInfo.InvariantCulture, $"{X(x):0.#},{Y(Math.Min(y, maxY)):0.#} ");
        svg.Append("\"/>\n");
    }

    private static string Escape(string text) => text.Replace("&", "&amp;", StringComparison.Ordinal).Replace("<", "&lt;", StringComparison.Ordinal);
}
