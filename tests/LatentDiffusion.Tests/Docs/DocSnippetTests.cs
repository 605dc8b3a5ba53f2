using System.Text.RegularExpressions;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Docs;

/// <summary>
/// Every C# block in the README, <c>docs/</c> and the package README compiles as pasted into a new console app
/// (<c>dotnet new console</c>: top-level statements, implicit usings, nullable on) that references the package. A
/// block that needs a name must declare it or write its own <c>using</c> line; nothing is added around it.
/// </summary>
public class DocSnippetTests
{
    /// <summary>The usings a new console project enables implicitly (<c>ImplicitUsings</c>).</summary>
    private const string ImplicitUsings = """
        global using System;
        global using System.Collections.Generic;
        global using System.IO;
        global using System.Linq;
        global using System.Net.Http;
        global using System.Threading;
        global using System.Threading.Tasks;
        """;

    private static readonly Regex Fence = new(@"^```(csharp|cs|c#)\s*$", RegexOptions.IgnoreCase);

    public sealed record Snippet(string File, int Line, string Code)
    {
        public override string ToString() => $"{File}:{Line}";
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "LatentDiffusion.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("The repository root (LatentDiffusion.sln) was not found above the test assembly.");
    }

    private static IEnumerable<string> DocumentFiles(string root)
    {
        yield return Path.Combine(root, "README.md");
        yield return Path.Combine(root, "nuget", "README.md");
        foreach (var f in Directory.EnumerateFiles(Path.Combine(root, "docs"), "*.md", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            yield return f;
    }

    /// <summary>The C# blocks of <paramref name="markdown"/>, with the line of their opening fence.</summary>
    public static IEnumerable<(int Line, string Code)> Blocks(string markdown)
    {
        var lines = markdown.Replace("\r\n", "\n").Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            if (!Fence.IsMatch(lines[i].Trim())) continue;
            int start = i;
            var body = new List<string>();
            for (i++; i < lines.Length && lines[i].Trim() != "```"; i++) body.Add(lines[i]);
            if (i == lines.Length) throw new InvalidDataException($"The C# block at line {start + 1} is not closed.");
            yield return (start + 1, string.Join('\n', body));
        }
    }

    public static IEnumerable<TestCaseData> Snippets()
    {
        var root = RepositoryRoot();
        foreach (var file in DocumentFiles(root))
        {
            var relative = Path.GetRelativePath(root, file).Replace('\\', '/');
            foreach (var (line, code) in Blocks(File.ReadAllText(file)))
                yield return new TestCaseData(new Snippet(relative, line, code)).SetName($"Compiles({relative}:{line})");
        }
    }

    [Test]
    public void TheDocumentsHaveCSharpBlocks()
        => Assert.That(Snippets().Count(), Is.GreaterThanOrEqualTo(5), "the block finder found too few C# blocks to be working");

    [Test]
    public void TheBlockFinderReportsLinesAndBodies()
    {
        var blocks = Blocks("text\n```csharp\nvar a = 1;\n```\n```bash\nls\n```\n``` cs\n```\n").ToList();
        Assert.That(blocks.Select(b => b.Line), Is.EqualTo(new[] { 2 }));
        Assert.That(blocks[0].Code, Is.EqualTo("var a = 1;"));
    }

    [TestCaseSource(nameof(Snippets))]
    public void Compiles(Snippet snippet)
    {
        var parse = new CSharpParseOptions(LanguageVersion.Latest);
        var trees = new[]
        {
            CSharpSyntaxTree.ParseText(ImplicitUsings, parse, "GlobalUsings.g.cs"),
            CSharpSyntaxTree.ParseText(snippet.Code, parse, snippet.File),
        };
        var compilation = CSharpCompilation.Create("Snippet", trees, References.Value,
            new CSharpCompilationOptions(OutputKind.ConsoleApplication, nullableContextOptions: NullableContextOptions.Enable));
        var errors = compilation.GetDiagnostics().Where(d => d.Severity == DiagnosticSeverity.Error).ToList();
        Assert.That(errors.Count, Is.Zero, () =>
            $"{snippet} does not compile as pasted:\n" + string.Join("\n", errors.Select(e =>
            {
                int line = e.Location.GetLineSpan().StartLinePosition.Line;
                // The block's first code line is the line after its fence.
                return $"  {snippet.File}:{snippet.Line + 1 + line}: {e.Id} {e.GetMessage()}";
            })));
    }

    /// <summary>The assemblies the test process runs with: the framework and every package the library brings.</summary>
    private static readonly Lazy<IReadOnlyList<MetadataReference>> References = new(() =>
        ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!)
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Where(p => p.EndsWith(".dll", StringComparison.OrdinalIgnoreCase) && !Path.GetFileName(p).StartsWith("LatentDiffusion.Tests", StringComparison.Ordinal))
            .Select(p => (MetadataReference)MetadataReference.CreateFromFile(p))
            .ToList());
}
