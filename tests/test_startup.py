"""Start-up and shell manners of the CLI: no torch for help/list, quiet pipes, ordinary file modes."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)


def test_help_and_list_presets_do_not_import_torch():
    code = ("import sys, contextlib, io\nfrom bench.cli import main\n"
            "for argv in (['list', 'presets'], ['-q', 'list', 'presets'], ['list', 'protocols']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()) as out: assert main(argv) == 0\n"
            "    assert out.getvalue().count('\\n') > 5\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False"


def test_protocol_summaries_read_from_source_match_the_imported_registry():
    # `bench list protocols` reads the decorators statically; the registry is what `bench run` uses
    from bench.protocols import get_protocol, list_protocols, protocol_summaries
    static = protocol_summaries()
    assert list(static) == list_protocols()
    assert static == {name: get_protocol(name).description for name in list_protocols()}
    assert all(static.values())


def test_public_api_names_still_resolve_lazily():
    r = _run("import sys, bench; assert 'torch' not in sys.modules; "
             "from bench import load_backbone, RunContext; import bench.runner as m; "
             "assert RunContext is m.RunContext; print(sorted(set(bench.__all__) - set(dir(bench))))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_closed_pipe_is_not_a_traceback():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "bench", "list", "presets"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, cwd=ROOT)
    p.stdout.readline()
    p.stdout.close()   # like `| head -1`
    err = p.stderr.read().decode()
    assert p.wait() == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_atomic_writes_use_the_umask_mode(tmp_path):
    from bench._io import atomic_write_text
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    # the same mode open() gives a fresh file under that umask
    os.umask(0o022)
    try:
        ref = tmp_path / "ref.txt"
        ref.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(ref.stat().st_mode)


def test_list_layouts_names_every_registered_layout():
    import contextlib
    import io

    from bench.backbones.layouts import list_layouts
    from bench.cli import main
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["list", "layouts"]) == 0
    printed = [line.split()[0] for line in out.getvalue().splitlines()]
    expected = [layout.name for layout in list_layouts()]
    assert expected and printed == expected


def test_verbosity_flags_work_before_and_after_the_verb():
    from bench.cli import build_parser
    parser, _ = build_parser()
    for argv, (verbose, quiet) in {("-v", "list", "presets"): (True, False),
                                   ("list", "presets", "-v"): (True, False),
                                   ("list", "presets", "--quiet"): (False, True),
                                   ("-q", "list", "presets"): (False, True),
                                   ("list", "presets"): (False, False)}.items():
        args = parser.parse_args(list(argv))
        assert (args.verbose, args.quiet) == (verbose, quiet), argv


def test_list_checkpoints_names_every_registry_entry():
    import contextlib
    import io

    from bench.backbones.zoo import load_registry
    from bench.cli import main
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["list", "checkpoints"]) == 0
    rows = [line.split()[:2] for line in out.getvalue().splitlines()]
    registry = load_registry()
    assert registry and rows == [[name, e.arch or "-"] for name, e in registry.items()]   # "-": no arch


def test_importing_the_entry_point_loads_almost_nothing():
    """The console script runs `from bench.cli import main` before main's try can catch a Ctrl-C: that import must
    not load argparse, logging or torch, so the uncatchable window is Python's start-up alone."""
    r = _run("import sys; before = set(sys.modules); import bench.cli; "
             "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in "
             "('argparse', 'logging', 'torch', 'pkgutil', 'yaml', 'numpy')))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
