"""Run checkov's ARM scan on a folder and report what it saw (run in the arm-validate tool venv).

    <tool venv>/bin/python cloud/validate/checkov_scan.py DIRECTORY [DIRECTORY...]

Prints one JSON object, ``{DIRECTORY: report}`` (one process scans several folders: checkov imports in ~3 s);
each report holds:

* ``results``: every passed, failed and skipped check (id, name, resource, file, suppress comment);
* ``summary``: checkov's own counts (``resource_count`` included);
* ``resources``: the id (``<type>.<name as checkov rendered it>``) of every resource checkov scanned;
* ``resources_without_checks``: the scanned resources no check applied to;
* ``types_with_checks``: the ARM resource types checkov has at least one check for.

The last three let the caller demand that every resource of the template was scanned and that every resource
of a checked type shows up in the results: checkov 3.3 silently drops the failed checks of resources whose
names use toLower()/trim()/join()/split()/substring() (see ``arm_checks.checkov_coverage_problems``), so
"no failures" alone proves nothing. Uses checkov's ARM runner in-process (the same parser, checks, graph checks
and inline ``checkov:skip`` handling as ``checkov --framework arm``), with nothing downloaded.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any


def _record(check: Any) -> dict[str, Any]:
    return {
        "check_id": check.check_id,
        "check_name": check.check_name,
        "resource": check.resource,
        "file": check.file_path,
        "suppress_comment": (check.check_result or {}).get("suppress_comment"),
    }


def scan(directory: Path) -> dict[str, Any]:
    from checkov.arm.registry import arm_resource_registry
    from checkov.arm.runner import Runner
    from checkov.common.bridgecrew.check_type import CheckType
    from checkov.runner_filter import RunnerFilter

    logging.getLogger().setLevel(logging.ERROR)  # checkov warns about every dependsOn it cannot resolve
    reports = Runner().run(root_folder=str(directory), runner_filter=RunnerFilter(framework=[CheckType.ARM]))
    report = reports[0] if isinstance(reports, list) else reports
    if report.parsing_errors:
        raise SystemExit(f"checkov could not parse: {sorted(report.parsing_errors)}")
    return {
        "results": {
            "passed": [_record(c) for c in report.passed_checks],
            "failed": [_record(c) for c in report.failed_checks],
            "skipped": [_record(c) for c in report.skipped_checks],
        },
        "summary": report.get_summary(),
        # report.resources holds "<file>:<resource id>"
        "resources": sorted(r.split(":", 1)[1] for r in report.resources),
        "resources_without_checks": sorted(r.resource for r in report.extra_resources),
        "types_with_checks": sorted(t for t in arm_resource_registry.checks if "/" in t),
    }


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps({name: scan(Path(name)) for name in argv}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
