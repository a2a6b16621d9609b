"""What ran and how, in a run crate (vpo.tools.crate), read from the job reports.

The code: the workflow (at the code version the jobs recorded), one SoftwareApplication per package
version, and per stage a tool and the step that runs it. The provenance: one CreateAction per job,
one for the run, and Snakemake's OrganizeAction linking them through one ControlAction per job.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from rocrate.model.contextentity import ContextEntity
from rocrate.model.entity import Entity
from rocrate.rocrate import ROCrate

from vpo.core.provenance import JobRecord
from vpo.tools.crate_files import (
    Builder,
    add_conda_envs,
    add_rule_files,
    file_properties,
    local_id,
    project_rel,
    report_rel,
)

# Our term for the Slurm job id, pointing at Slurm's description of the variable.
SLURM_JOB_ID_TERM = "https://slurm.schedmd.com/sbatch.html#OPT_SLURM_JOB_ID"
# A string, not an @id: the RO-Crate 1.1 context does not type actionStatus, and the profiles write it so.
COMPLETED = "http://schema.org/CompletedActionStatus"


def _code(report: JobRecord) -> dict[str, Any]:
    return report.provenance.get("code") or {}


def _version_string(code: dict[str, Any]) -> str | None:
    commit = code.get("commit")
    if not commit:
        return None
    return f"{commit}-dirty" if code.get("dirty") else commit


def _versions_seen(reports: Sequence[JobRecord]) -> set[str]:
    return {v for r in reports if (v := _version_string(_code(r)))}


def pinned_commit(reports: Sequence[JobRecord]) -> str | None:
    """The latest job's commit when every job ran at a clean one, else None: the commit pins no code."""
    if all(_code(r).get("commit") and not _code(r).get("dirty") for r in reports):
        return _code(reports[-1]).get("commit")
    return None


def _snakemake_version(reports: Sequence[JobRecord]) -> str | None:
    """Job envs (conda) may lack snakemake: the latest report that has it names the engine's version."""
    return next(
        (str(v) for r in reversed(reports) if (v := (r.provenance.get("versions") or {}).get("snakemake"))),
        None,
    )


def parse_started(value: str) -> dt.datetime:
    """JobReport writes `%Y-%m-%dT%H:%M:%S%z` (e.g. +0100); plain ISO 8601 is accepted too."""
    try:
        return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return dt.datetime.fromisoformat(value)


def _started(report: JobRecord) -> dt.datetime | None:
    started = report.provenance.get("started")
    try:
        return parse_started(started) if started else None
    except ValueError:
        return None


def _ended(report: JobRecord) -> dt.datetime | None:
    started, wall_s = _started(report), report.provenance.get("wall_s")
    if started is None or wall_s is None:
        return None
    return started + dt.timedelta(seconds=float(wall_s))


def start_key(report: JobRecord) -> tuple[float, str]:
    """Sorts reports oldest first; those without a start time come first, by path."""
    started = _started(report)
    return (started.timestamp() if started else float("-inf"), str(report.path))


def _iso(moment: dt.datetime) -> str:
    """To the second, or the millisecond when there is a fraction: the profiles' validator reads no other
    precision as ISO 8601."""
    return moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")


def add_workflow(b: Builder, reports: Sequence[JobRecord]) -> Entity:
    """The Snakefile as main entity: a Snakemake ComputationalWorkflow, and a HowTo as it lists steps,
    at the code version of the latest job (it wrote the outputs last). The rule files are parts of it by
    isPartOf, as the profile keeps the workflow's hasPart for the tools its steps run; the conda envs
    are its build instructions."""
    snakefile = b.root / "Snakefile"
    version = _version_string(_code(reports[-1]))
    versions_seen = _versions_seen(reports)
    workflow = b.crate.add_workflow(
        snakefile,
        dest_path="Snakefile",
        main=True,
        lang="snakemake",
        lang_version=_snakemake_version(reports),
        properties={
            "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"],
            "name": "VPO workflow",
            **file_properties(snakefile),
            "description": "Snakefile of the VPO workflow; the rules are in workflow/rules/.",
        },
    )
    b.files["Snakefile"] = workflow
    b.copied.append(snakefile)
    if version:
        workflow["version"] = version
    if len(versions_seen) > 1:
        workflow["description"] += (
            f" The jobs ran at different code versions ({', '.join(sorted(versions_seen))}); "
            "each job's own is in its action's description."
        )

    add_rule_files(b, workflow, version)
    add_conda_envs(b, workflow)
    return workflow


def _release_url(name: str, version: str) -> str:
    if name == "python":
        return f"https://www.python.org/downloads/release/python-{version.replace('.', '')}/"
    return f"https://pypi.org/project/{quote(name)}/{quote(version)}/"


def add_software(
    crate: ROCrate, workflow: Entity, reports: Sequence[JobRecord]
) -> dict[tuple[str, str], Entity]:
    """One SoftwareApplication per (package, version) across all jobs, identified by its release page."""
    software: dict[tuple[str, str], Entity] = {}
    for report in reports:
        for name, ver in sorted((report.provenance.get("versions") or {}).items()):
            if (name, str(ver)) in software:
                continue
            url = _release_url(name, str(ver))
            props = {"@type": "SoftwareApplication", "name": name, "version": str(ver), "url": {"@id": url}}
            software[(name, str(ver))] = crate.add(ContextEntity(crate, url, properties=props))
    if software:
        workflow["softwareRequirements"] = list(software.values())
    return software


def add_steps(
    crate: ROCrate,
    workflow: Entity,
    reports: Sequence[JobRecord],
    package: Entity,
    software: dict[tuple[str, str], Entity],
) -> dict[str, Entity]:
    """Per stage the reports name, the tool its jobs ran (a SoftwareApplication needing the package and
    the software those jobs recorded) and the HowToStep that runs it; the workflow lists them as hasPart
    and step. Stages, not rules: a report names its stage, and two rules can run one stage."""
    steps: dict[str, Entity] = {}
    for stage in dict.fromkeys(r.stage for r in reports):
        jobs = [r for r in reports if r.stage == stage]
        props: dict[str, Any] = {
            "@type": "SoftwareApplication",
            "name": f"{stage} stage",
            "description": f"Stage {stage} of the vpo package; each job's report records its command line",
        }
        if version := _version_string(_code(jobs[-1])):
            props["version"] = version
        tool = crate.add(ContextEntity(crate, local_id(f"tool/{stage}"), properties=props))
        used = sorted({(n, str(v)) for r in jobs for n, v in (r.provenance.get("versions") or {}).items()})
        tool["softwareRequirements"] = [package, *(software[key] for key in used)]
        step_props = {"@type": "HowToStep", "name": f"{stage} step", "workExample": tool}
        steps[stage] = crate.add(ContextEntity(crate, local_id(f"step/{stage}"), properties=step_props))
        workflow.append_to("hasPart", tool)
        workflow.append_to("step", steps[stage])
    return steps


def add_job_actions(
    b: Builder,
    reports: Sequence[JobRecord],
    steps: dict[str, Entity],
    results_of: dict[str, list[Entity]],
) -> tuple[list[Entity], list[Entity]]:
    """One CreateAction per job report: its stage's tool as instrument, the inputs as object (the
    crate's copy when the checksum matches, else a `#` File with the recorded sha256), the report and the
    job's outputs as result, the host as agent; and the ControlAction by which the engine ran it as its
    step. Returns the ControlActions and the inputs from outside results/, which the run as a whole read."""
    several_versions = len(_versions_seen(reports)) > 1
    controls: list[Entity] = []
    outside: dict[str, Entity] = {}
    for report in reports:
        rel = report_rel(b.root, report)
        objects = []
        for name, sha in (report.provenance.get("inputs_sha256") or {}).items():
            objects.append(b.reference_input(name, sha))
            if not (project_rel(b.root, name) or "").startswith("results/"):
                outside[objects[-1].id] = objects[-1]
        action = b.crate.add_action(
            steps[report.stage]["workExample"],
            identifier=local_id(f"job/{rel}"),
            object=objects or None,
            result=results_of[str(report.path)],
            properties=_job_properties(report, rel, several_versions),
        )
        if host := report.provenance.get("host"):
            action["agent"] = _host(b.crate, host)
        control = {
            "@type": "ControlAction",
            "name": f"Orchestration of job {report.stage}",
            "instrument": steps[report.stage],
            "object": action,
            "actionStatus": COMPLETED,
        }
        controls.append(b.crate.add(ContextEntity(b.crate, local_id(f"control/{rel}"), properties=control)))
    return controls, list(outside.values())


def _job_properties(report: JobRecord, rel: str, several_versions: bool) -> dict[str, Any]:
    """The stage, start and end times, the code version when the jobs ran at several, the Slurm job id."""
    stage, prov = report.stage, report.provenance
    props: dict[str, Any] = {
        "@type": "CreateAction",
        "name": stage,
        "description": f"Job {stage}, report {rel}",
        "actionStatus": COMPLETED,
    }
    if (started := _started(report)) is not None:
        props["startTime"] = _iso(started)
    if (ended := _ended(report)) is not None:
        props["endTime"] = _iso(ended)
    if several_versions and (job_version := _version_string(_code(report))):
        props["description"] += f", code version {job_version}"
    if prov.get("slurm_job_id"):
        props["slurm_job_id"] = str(prov["slurm_job_id"])
    return props


def _host(crate: ROCrate, host: str) -> Entity:
    """The machine a job ran on, once per host name. schema.org's agent is "animate or inanimate"; the
    reports record the machine, not a person."""
    ident = local_id(f"host/{host}")
    if (existing := crate.get(ident)) is not None:
        return existing
    props = {
        "@type": "IndividualProduct",
        "name": host,
        "description": "Machine the job ran on (host name from its job report)",
    }
    return crate.add(ContextEntity(crate, ident, properties=props))


def add_run(
    crate: ROCrate,
    workflow: Entity,
    reports: Sequence[JobRecord],
    controls: Sequence[Entity],
    objects: list[Entity],
    results: list[Entity],
) -> Entity:
    """The run as one CreateAction of the workflow, from its first job's start to its last job's end;
    the root dataset mentions it first, then the jobs' actions."""
    props: dict[str, Any] = {
        "name": "Run of the VPO workflow",
        "description": (
            f"The run whose {len(reports)} job reports are in results/: the config files and the inputs "
            "from outside results/ as object, the main outputs as result. Each job is an action of its own."
        ),
    }
    if starts := [t for r in reports if (t := _started(r)) is not None]:
        props["startTime"] = _iso(min(starts, key=dt.datetime.timestamp))
    if ends := [t for r in reports if (t := _ended(r)) is not None]:
        props["endTime"] = _iso(max(ends, key=dt.datetime.timestamp))
    run = crate.add_action(
        workflow, identifier="#run", object=objects or None, result=results or None, properties=props
    )
    crate.root_dataset["mentions"] = [run, *(c["object"] for c in controls)]
    return run


def add_engine_run(
    crate: ROCrate,
    reports: Sequence[JobRecord],
    software: dict[tuple[str, str], Entity],
    controls: list[Entity],
    run: Entity,
) -> None:
    """Snakemake's OrganizeAction: the engine as instrument, the jobs' ControlActions as object, the
    run as result."""
    version = _snakemake_version(reports)
    if version is not None:
        engine = software[("snakemake", version)]
    else:
        props = {
            "@type": "SoftwareApplication",
            "name": "snakemake",
            "description": "The workflow engine; no job report recorded its version.",
            "url": {"@id": "https://snakemake.readthedocs.io"},
        }
        engine = crate.add(ContextEntity(crate, "https://pypi.org/project/snakemake/", properties=props))
    props = {
        "@type": "OrganizeAction",
        "name": "Run of snakemake" + (f" {version}" if version else ""),
        "instrument": engine,
        "object": controls,
        "result": run,
    }
    crate.add(ContextEntity(crate, "#engine-run", properties=props))


def declare_slurm_term(crate: ROCrate, reports: Sequence[JobRecord]) -> None:
    """The slurm_job_id property, described in the crate when a job's action carries it."""
    if any(r.provenance.get("slurm_job_id") for r in reports):
        props = {
            "@type": "rdf:Property",
            "rdfs:label": "slurm_job_id",
            "rdfs:comment": "Id of the Slurm job that ran this action (SLURM_JOB_ID).",
        }
        crate.add(ContextEntity(crate, SLURM_JOB_ID_TERM, properties=props))
