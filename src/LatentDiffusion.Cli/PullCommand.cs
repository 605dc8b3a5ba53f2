using System.CommandLine;
using LatentDiffusion.Hub;

namespace LatentDiffusion.Cli;

/// <summary><c>ldm pull REPO-ID</c>: downloads a diffusers model from the Hugging Face Hub; prints its folder.</summary>
internal static class PullCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var repo = new Argument<string>("repo-id") { Description = "The hub repository, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5." };
        var revision = new Option<string>("--revision") { Description = "Branch, tag or commit hash.", DefaultValueFactory = _ => "main" };
        var variant = new Option<string?>("--variant") { Description = "Weights variant to prefer, e.g. fp16 (components without it get their plain weights)." };
        var cacheDir = new Option<string?>("--cache-dir") { Description = "The hub cache folder; default: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub." };
        var endpoint = new Option<string?>("--endpoint") { Description = "The hub's address; default: HF_ENDPOINT, else https://huggingface.co." };
        var command = new Command("pull", "Download a diffusers model from the Hugging Face Hub (only the files a pipeline needs) and print its folder. A token for private or gated models is read from HF_TOKEN.")
        {
            repo, revision, variant, cacheDir, endpoint,
        };
        command.SetAction(async (parse, ct) =>
        {
            var options = new ModelHubOptions
            {
                Revision = parse.GetValue(revision) ?? "main",
                Variant = parse.GetValue(variant),
                CacheDirectory = parse.GetValue(cacheDir),
                Endpoint = parse.GetValue(endpoint),
            };
            var progress = PullProgress.For(stderr);
            string path;
            try
            {
                path = await ModelHub.DownloadAsync(parse.GetValue(repo)!, options, progress, ct);
            }
            finally
            {
                progress.Done();
            }
            stdout.WriteLine(path);
            return 0;
        });
        return command;
    }
}
