"""JUnit XML for a conformance run: one testsuite, one testcase per scenario (CI systems render it as is)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any


def junit_tree(report: Any) -> ET.ElementTree:
    c = report.counts
    suites = ET.Element("testsuites", name="ics2gw-conformance", tests=str(len(report.results)),
                        failures=str(c["failed"]), errors=str(c["error"]), skipped=str(c["skipped"]),
                        time=f"{report.seconds:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=f"ics2gw-conformance.{report.endpoint}",
                          tests=str(len(report.results)), failures=str(c["failed"]), errors=str(c["error"]),
                          skipped=str(c["skipped"]), time=f"{report.seconds:.3f}", timestamp=report.started)
    props = ET.SubElement(suite, "properties")
    for name, value in (("endpoint", report.endpoint), ("url", report.url), ("environment", report.environment),
                        ("simulator", str(report.simulator).lower()),
                        ("negative_tests_enabled", str(report.negative_enabled).lower())):
        ET.SubElement(props, "property", name=name, value=value)
    for r in report.results:
        case = ET.SubElement(suite, "testcase", classname=f"conformance.{r.group}", name=r.id,
                             time=f"{r.seconds:.3f}")
        if r.status == "failed":
            ET.SubElement(case, "failure", message=r.message[:500], type="ScenarioFailed").text = r.message
        elif r.status == "error":
            ET.SubElement(case, "error", message=r.message[:500], type="error").text = r.message
        elif r.status == "skipped":
            ET.SubElement(case, "skipped", message=r.message[:500])
        ET.SubElement(case, "system-out").text = f"{r.title}\n" + json.dumps(r.evidence, default=str, indent=1)
    ET.indent(suites)
    return ET.ElementTree(suites)


def write_junit(report: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_tree(report).write(path, encoding="utf-8", xml_declaration=True)
    return path
