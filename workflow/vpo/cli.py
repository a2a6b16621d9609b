"""The `vpo` command: rewrite, audit, export-crate, estimate, check-config, config-doc."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="vpo", description="VPO workflow tools.")
    parser.add_argument(
        "command", choices=["rewrite", "audit", "export-crate", "estimate", "check-config", "config-doc"]
    )
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        print(
            "\n  rewrite       rewrite queries with a trained policy (vpo rewrite --help)"
            "\n  audit         where a pair, candidate, video or file came from: vpo audit <id | path>"
            "\n  export-crate  the run as an RO-Crate (workflow, config, outputs with sha256, jobs)"
            "\n  estimate      what the LLM calls of a config may cost: vpo estimate config/paper.yaml"
            "\n  check-config  validate a config file: vpo check-config config/paper.yaml"
            "\n  config-doc    print config/README.md generated from the schema"
        )
        return
    command, rest = argv[0], argv[1:]
    if command == "rewrite":
        from vpo.rewrite import main as rewrite

        rewrite(rest)
    elif command == "audit":
        from vpo.audit import main as audit

        audit(rest)
    elif command == "export-crate":
        from vpo.crate import main as export_crate

        export_crate(rest, prog="vpo export-crate")
    elif command == "estimate":
        from vpo.estimate import main as estimate

        estimate(rest)
    elif command == "check-config":
        from vpo.config import ConfigError, load_config

        for path in rest or ["config/config.yaml"]:
            try:
                load_config(path)
            except ConfigError as exc:
                raise SystemExit(str(exc)) from None
            print(f"{path}: ok")
    elif command == "config-doc":
        from vpo.config import config_doc

        sys.stdout.write(config_doc())
    else:
        parser.error(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
