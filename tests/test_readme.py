"""The README's two set-up commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", setup, flags=re.S)]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_them():
    cmds = _readme_setup_commands()
    assert len(cmds) == 2 and all("\n" not in c for c in cmds), cmds
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    install, test = cmds
    assert install in ci and test in ci
    assert ci.index(install) < ci.index(test)
    assert "python3 -m venv" in (ROOT / ".ci" / "run").read_text()


def test_constraints_pin_the_verified_stack():
    pins = dict(
        line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line
    )
    assert pins["torch"] == "2.14.1" and pins["nni"] == "3.0" and pins["pytorch-lightning"] == "2.6.6"
    major, minor = (int(x) for x in pins["filelock"].split(".")[:2])
    assert (major, minor) < (3, 12)


def test_readme_library_example_imports_and_calls_exist():
    """The README's Python example names real objects (it runs in ~1 min; here: imports and attributes)."""
    import ast

    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, flags=re.S).group(1)
    tree = ast.parse(code)
    namespace: dict = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            exec(compile(ast.Module([node], []), "README", "exec"), namespace)
    for node in ast.walk(tree):  # e.g. Finetune.from_pretrained, ContrastivePretrain.simclr
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in namespace
        ):
            assert hasattr(namespace[node.value.id], node.attr), f"{node.value.id}.{node.attr}"


def test_readme_results_tables_match_the_committed_benchmark_json():
    import subprocess
    import sys

    script = ROOT / "benchmarks" / "readme_table.py"
    r = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_published_commands_name_no_folder_of_this_machine():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from common import portable_command
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    cmd = ("python benchmarks/accuracy.py --libri ../shared/data/librispeech-mini --ocean /srv/so762 --synth "
           "--eval-model /work/runs/embedded/nas/model.pt --space '{\"stem_width\": 64}' --root=/x --resume")
    assert portable_command(cmd) == (
        "python benchmarks/accuracy.py --libri LIBRISPEECH --ocean SPEECHOCEAN --synth "
        "--eval-model runs/embedded/nas/model.pt --space '{\"stem_width\": 64}' --root=CORPUS"
    )
    pipeline = "python recipes/run.py name=x out_root=/work/runs data.root=/data/LibriSpeech"
    assert portable_command(pipeline) == "python recipes/run.py name=x out_root=runs data.root=CORPUS"
    assert portable_command("python benchmarks/vad.py") == "python benchmarks/vad.py"
    readme = (ROOT / "README.md").read_text()
    assert "../shared" not in readme and "/work/" not in readme
