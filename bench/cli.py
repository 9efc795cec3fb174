"""The command line: a thin shell. Each verb is a module of `bench.commands` with `add_parser(sub)` and
`run(args)`; this file discovers them, parses, and turns every BenchError into one line and a non-zero exit.
"""
from __future__ import annotations

import sys

# argparse, logging and the verbs are imported inside main()'s try: a Ctrl-C while they load is then the one-line
# "interrupted", not a traceback. Only Python's own start-up (site) is outside bench's reach.

__all__ = ["main", "build_parser"]


def _verb_modules():
    import importlib
    import pkgutil

    from . import commands
    return [importlib.import_module(f"{commands.__name__}.{m.name}")
            for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    import argparse

    from . import __version__
    parser = argparse.ArgumentParser(prog="bench", description="Evaluate self-supervised visual representations "
                                                                "with the papers' protocols.")
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs = {}
    for mod in _verb_modules():
        p = mod.add_parser(sub)
        # also after the verb; SUPPRESS keeps the sub-parser from resetting a flag given before it
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress")
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="print errors only")
        verbs[p.prog.split()[-1]] = mod
    return parser, verbs


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv   # accepted anywhere on the line, also after the verb
    try:
        return _main([a for a in argv if a != "--debug"])
    except KeyboardInterrupt:
        if debug:
            raise
        print("bench: interrupted; finished records and cache entries are kept", file=sys.stderr)
        return 130
    except Exception as e:
        from .errors import BenchError
        if debug:
            raise
        if isinstance(e, BenchError):
            msg = str(e).strip()
            if "Original Traceback" in msg:   # re-raised from a DataLoader worker: keep the error's own line
                msg = msg.splitlines()[-1].split(": ", 1)[-1]
            print(f"bench: error: {msg}", file=sys.stderr)
            return 2
        if isinstance(e, OSError):   # disk full, permission denied, ... : name the file and the fix
            where = f"{e.filename}: " if e.filename else ""
            fix = {28: "free disk space (or point BENCH_CACHE / --out elsewhere) and re-run",
                   13: "choose a folder you can write to (--out, --cache-dir, $BENCH_CACHE)",
                   30: "choose a writable folder (--out, --cache-dir, $BENCH_CACHE)"}.get(e.errno, "fix it and re-run")
            print(f"bench: error: {where}{e.strerror or e}; {fix} (--debug shows the traceback)", file=sys.stderr)
            return 2
        raise


def _main(argv: list[str]) -> int:
    import logging

    parser, verbs = build_parser()
    verb = next((a for a in argv if not a.startswith("-")), None)
    if verb in verbs and hasattr(verbs[verb], "print_help") and {"-h", "--help"} & set(argv):
        return verbs[verb].print_help(argv)   # a verb whose flags depend on another flag (run --protocol P)
    args, extra = parser.parse_known_args(argv)
    args.argv = argv
    mod = verbs[args.verb]
    if extra and not getattr(mod, "ACCEPTS_EXTRA", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    level = logging.ERROR if args.quiet else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    if args.quiet:   # "errors only": the progress bars (all of them read BENCH_PROGRESS) go too
        import os
        os.environ["BENCH_PROGRESS"] = "0"
    try:
        rc = mod.run(args, extra) if getattr(mod, "ACCEPTS_EXTRA", False) else mod.run(args)
        sys.stdout.flush()   # inside the try, so a closed pipe surfaces here and not at interpreter exit
        return rc
    except BrokenPipeError:
        # `bench list presets | head -1`: the reader left; silence the flush at exit instead of a traceback.
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
