namespace LatentDiffusion.Hub;

/// <summary>How far <see cref="ModelHub.DownloadAsync"/> has got: the file it is on, and the whole download.</summary>
/// <param name="File">The file's path in the repository, e.g. <c>unet/diffusion_pytorch_model.fp16.safetensors</c>.</param>
/// <param name="FileIndex">Its position among the files fetched, from 0.</param>
/// <param name="FileCount">How many files are fetched.</param>
/// <param name="FileBytesDone">Its bytes present so far (cached and resumed bytes included).</param>
/// <param name="FileSize">Its size in bytes.</param>
/// <param name="BytesDone">The bytes of all files present so far.</param>
/// <param name="TotalBytes">The size of all files.</param>
public sealed record ModelHubProgress(string File, int FileIndex, int FileCount, long FileBytesDone, long FileSize, long BytesDone, long TotalBytes);
