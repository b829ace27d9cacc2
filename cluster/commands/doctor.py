"""`cluster doctor`: check this machine the way `cluster up` checks every node, plus Bonjour and MLX."""

from __future__ import annotations

import argparse
import json
import sys

from cluster import paths
from deploy.doctor import doctor_table, run_doctor


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check that this machine can run boltpipe (Python, disk, Metal, ANE, "
                                      "Thunderbolt, Bonjour, MLX)")
    p.add_argument("--python", default=sys.executable,
                   help="the interpreter to check (default: the one running this command)")
    p.add_argument("--mdns-timeout", type=float, default=5.0, help="seconds to wait for the Bonjour test (default 5)")
    p.add_argument("--json", action="store_true", help="print the checks and the probe's facts as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    report = run_doctor(args.python, str(paths.home()), mdns_timeout_s=args.mdns_timeout)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(doctor_table(report.findings))
        print("\nnothing fatal" if report.ok else "\nFAIL: fix the checks marked FAIL, then run `cluster doctor` again")
    return 0 if report.ok else 1
