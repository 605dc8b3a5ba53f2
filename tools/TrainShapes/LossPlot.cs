using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace LatentDiffusion.Tools.TrainShapes;

/// <summary>
/// A loss curve as a PNG, drawn pixel by pixel (no font or drawing library): raw losses in grey, a moving average in blue,
/// log-scaled y, a dashed red line where a new training stage starts.
/// </summary>
internal static class LossPlot
{
    public static void Save(string path, IReadOnlyList<float> losses, IReadOnlyList<int>? stageStarts = null, int width = 800, int height = 400, int window = 50)
    {
        using var image = new Image<Rgb24>(width, height, new Rgb24(255, 255, 255));
        if (losses.Count < 2) { image.SaveAsPng(path); return; }
        var logs = losses.Select(l => Math.Log10(Math.Max(l, 1e-6))).ToArray();
        var smooth = new double[logs.Length];
        double sum = 0;
        for (int i = 0; i < logs.Length; i++)
        {
            sum += logs[i];
            if (i >= window) sum -= logs[i - window];
            smooth[i] = sum / Math.Min(i + 1, window);
        }
        double lo = logs.Min(), hi = logs.Max();
        if (hi - lo < 1e-9) hi = lo + 1;
        const int margin = 20;
        int X(int i) => margin + (int)((long)i * (width - 2 * margin) / (logs.Length - 1));
        int Y(double v) => height - margin - (int)((v - lo) / (hi - lo) * (height - 2 * margin));
        // Axes, and a grid line per decade of the loss.
        for (int x = margin; x < width - margin; x++) image[x, height - margin] = new Rgb24(0, 0, 0);
        for (int y = margin; y <= height - margin; y++) image[margin, y] = new Rgb24(0, 0, 0);
        for (double d = Math.Ceiling(lo); d <= hi; d += 1)
            for (int x = margin; x < width - margin; x += 4) image[x, Math.Clamp(Y(d), 0, height - 1)] = new Rgb24(200, 200, 200);
        void Line(int x0, int y0, int x1, int y1, Rgb24 c)
        {
            int dx = Math.Abs(x1 - x0), dy = -Math.Abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, err = dx + dy;
            while (true)
            {
                if (x0 >= 0 && x0 < width && y0 >= 0 && y0 < height) image[x0, y0] = c;
                if (x0 == x1 && y0 == y1) break;
                int e2 = 2 * err;
                if (e2 >= dy) { err += dy; x0 += sx; }
                if (e2 <= dx) { err += dx; y0 += sy; }
            }
        }
        foreach (int start in stageStarts ?? [])
            for (int y = margin; y < height - margin; y += 6) image[Math.Clamp(X(start), 0, width - 1), y] = new Rgb24(220, 40, 40);
        for (int i = 1; i < logs.Length; i++) Line(X(i - 1), Y(logs[i - 1]), X(i), Y(logs[i]), new Rgb24(190, 190, 190));
        for (int i = 1; i < smooth.Length; i++) Line(X(i - 1), Y(smooth[i - 1]), X(i), Y(smooth[i]), new Rgb24(20, 60, 200));
        image.SaveAsPng(path);
    }
}
