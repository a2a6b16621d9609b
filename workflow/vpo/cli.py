"""The `vpo` command: rewrite, audit, export-crate, estimate, check-config, config-doc."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys

# command → (one-line summary, module whose main(argv) runs it; None: defined here)
COMMANDS = {
    "rewrite": ("rewrite queries with a trained policy (vpo rewrite --help)", "vpo.tools.rewrite"),
    "audit": ("where a pair, candidate, video or file came from: vpo audit <id | path>", "vpo.tools.audit"),
    "export-crate": (
        "the run as an RO-Crate (workflow, config, outputs with sha256, jobs)",
        "vpo.tools.crate",
    ),
    "estimate": (
        "what the LLM calls of a config may cost: vpo estimate config/paper.yaml",
        "vpo.tools.estimate",
    ),
    "status": ("where a run stands: jobs per stage, cache hits, failures, spend, ETA", "vpo.tools.status"),
    "slurm-profile": (
        "a Slurm profile for a config: vpo slurm-profile --partition P",
        "vpo.tools.slurm_profile",
    ),
    "check-config": ("validate config files: vpo check-config config/paper.yaml", None),
    "config-doc": ("print config/README.md, generated from the config schema", None),
}


class _Version(argparse.Action):
    """--version, computed only when asked (it runs git)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version())
        parser.exit()


def version() -> str:
    from vpo.core.provenance import code_version

    commit = code_version()["commit"]
    return f"vpo {importlib.metadata.version('vpo-workflow')}" + (f" (git {commit[:12]})" if commit else "")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpo",
        usage="vpo [--version] command [arguments]",
        description="VPO workflow tools. Each command has its own --help.",
        epilog="\n".join(f"  {name:<13} {summary}" for name, (summary, _) in COMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and git commit")
    parser.add_argument("command", choices=list(COMMANDS), help="one of the commands below")
    return parser


def check_config(argv: list[str]) -> None:
    from vpo.config.validate import ConfigError, load_config

    parser = argparse.ArgumentParser(
        prog="vpo check-config",
        description="Validate config files as Snakemake does before any job: schema, cross-key and file "
        "checks. Paths in them are read relative to the current directory.",
    )
    parser.add_argument("configs", nargs="*", default=["config/config.yaml"], help="config files (YAML)")
    for path in parser.parse_args(argv).configs:
        try:
            load_config(path)
        except ConfigError as exc:
            raise SystemExit(str(exc)) from None
        print(f"{path}: ok")


def config_doc(argv: list[str]) -> None:
    from vpo.config.doc import config_doc as doc

    argparse.ArgumentParser(
        prog="vpo config-doc",
        description="Print the documentation of every config key (Markdown), generated from "
        "workflow/schemas/config.schema.yaml: vpo config-doc > config/README.md",
    ).parse_args(argv)
    sys.stdout.write(doc())


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = make_parser()
    if not argv:
        parser.print_help()
        return
    args, rest = parser.parse_args(argv[:1]), argv[1:]  # the command parses the rest (and its --help)
    if args.command == "check-config":
        check_config(rest)
    elif args.command == "config-doc":
        config_doc(rest)
    elif args.command == "export-crate":
        importlib.import_module("vpo.tools.crate").main(rest, prog="vpo export-crate")
    else:
        importlib.import_module(COMMANDS[args.command][1]).main(rest)


if __name__ == "__main__":
    main()
