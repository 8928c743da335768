"""Widgets of the Retrain page: the sidebar form, the job table and the live job view.

Each ``*_ui`` helper draws one part and returns plain values (a params dict, a job id, whether
Cancel was clicked); the page decides what to do with them. Nothing here touches the queue.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from core.jobs import form

FORM_KEY = "retrain_form"
STATUS_LABELS: dict[str, str] = {
    "queued": "queued",
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}
LOG_TAIL_LINES = 40


def _parse_number(text: str) -> float | str:
    """A float from the learning-rate box, or the raw text so validation can quote it."""
    try:
        return float(str(text).strip())
    except ValueError:
        return str(text)


def retrain_form_ui(
    datasets: Sequence[Mapping[str, Any]],
    families: Sequence[str],
    cluster: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The sidebar form of a training job.

    Args:
        datasets: one mapping per dataset flag: ``flag``, ``is_3d``, ``present`` (28 px file on
            disk) and ``note`` (e.g. "binary shape mask"), in display order.
        families: model families (``core.config.MODEL_FAMILIES``).
        cluster: the Ray worker's description of its cluster (``core.jobs`` executor info:
            ``cpus``, ``gpus``, ``max_node_cpus``), or None when jobs run locally. CPUs are
            offered on a cluster, GPUs only when it has some, workers only when it has room
            for two.

    Returns:
        The raw job parameters when the form was submitted on this run, else None. Values are
        passed on unvalidated (the learning rate stays text if it is not a number) so that
        ``core.jobs.check_params`` can report every bad value in one place; on a cluster,
        ``resources`` holds ``{"cpus", "gpus", "workers"}`` for ``check_resources``.
    """
    by_flag = {d["flag"]: d for d in datasets}

    def dataset_label(flag: str) -> str:
        d = by_flag[flag]
        where = "on disk" if d.get("present") else "downloads first"
        return f"{flag} ({'3D' if d.get('is_3d') else '2D'}, {where})"

    options = {"dataset": list(by_flag), "model": list(families), "size": list(form.SIZES)}
    values: dict[str, Any] = {}
    with st.sidebar.form(FORM_KEY, border=True):
        st.subheader("New training job")
        # one widget per core.jobs.form entry: a new TrainConfig field is added there, not here
        for f in form.FORM_FIELDS:
            common = {"key": f.key, "help": f.help}
            if f.widget == "select":
                fmt = dataset_label if f.name == "dataset" else str
                values[f.name] = st.selectbox(f.label, options[f.name], format_func=fmt, **common)
            elif f.widget == "int":
                values[f.name] = st.number_input(f.label, value=f.default, step=1, **common)
            elif f.widget == "float":
                values[f.name] = float(
                    st.number_input(
                        f.label, value=f.default, step=f.step, format=f.format, **common
                    )
                )
            elif f.widget == "text":
                values[f.name] = _parse_number(st.text_input(f.label, value=f.default, **common))
            elif f.widget == "check":
                values[f.name] = bool(st.checkbox(f.label, value=f.default, **common))
            else:  # a typo in core.jobs.form must not silently drop a field
                raise ValueError(f"form field {f.name!r} has unknown widget {f.widget!r}")
        if cluster:
            values["resources"] = _resources_inputs(cluster)
        submitted = st.form_submit_button(
            "Queue training job", type="primary", key="retrain_submit", width="stretch"
        )
    return values if submitted else None


def _resources_inputs(cluster: Mapping[str, Any]) -> dict[str, int]:
    """CPUs per worker, and GPUs / workers when the cluster has them (inside the form)."""
    st.caption("Resources on the Ray cluster")
    cpus = max(1, int(cluster.get("max_node_cpus") or cluster.get("cpus") or 1))
    gpus = int(cluster.get("gpus") or 0)
    total_cpus = int(cluster.get("cpus") or 1)
    wanted = {
        "cpus": int(
            st.number_input(
                "CPUs per worker",
                min_value=1,
                max_value=cpus,
                value=1,
                step=1,
                key="retrain_cpus",
                help=f"The largest node has {cpus} CPU(s).",
            )
        )
    }
    if gpus:
        wanted["gpus"] = int(
            st.number_input(
                "GPUs per worker",
                min_value=0,
                max_value=gpus,
                value=0,
                step=1,
                key="retrain_gpus",
                help=f"The cluster has {gpus} GPU(s) in all.",
            )
        )
    if total_cpus >= 2:
        wanted["workers"] = int(
            st.number_input(
                "Workers (multi-worker training)",
                min_value=1,
                max_value=total_cpus,
                value=1,
                step=1,
                key="retrain_workers",
                help="More than 1: one model trained by N processes with TensorFlow's "
                "MultiWorkerMirroredStrategy, spread over the cluster's nodes.",
            )
        )
    return wanted


def executor_note(executor: Mapping[str, Any] | None) -> str:
    """Where jobs run, in one sentence, from the worker's recorded executor description.

    Args:
        executor: ``WorkerInfo.executor`` (None: a local worker, or one from an older version).

    Returns:
        E.g. "Jobs run on this machine, one at a time." or the Ray cluster's address with its
        nodes and free CPUs/GPUs (never a dashboard link: the app does not expose it).
    """
    if not executor or executor.get("kind") != "ray":
        return "Jobs run on this machine, one at a time (local worker)."
    if executor.get("error"):
        return (
            f"Jobs run on the Ray cluster at `{executor.get('address', '?')}`, which cannot "
            f"be reached right now ({executor['error']})."
        )
    gpus = executor.get("gpus") or 0
    gpu_text = f", {executor.get('free_gpus', 0):g} of {gpus:g} GPUs free" if gpus else ", no GPUs"
    return (
        f"Jobs run on the Ray cluster at `{executor.get('address')}`: "
        f"{executor.get('nodes', '?')} node(s), {executor.get('free_cpus', 0):g} of "
        f"{executor.get('cpus', 0):g} CPUs free{gpu_text}; up to "
        f"{executor.get('max_running', 1)} jobs at once."
    )


def format_time(ts: float | None) -> str:
    """Local wall-clock time of a timestamp, or an em dash."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "—"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def job_rows(jobs: Sequence[Any]) -> list[dict[str, Any]]:
    """Table rows (plain dicts) for a list of ``core.jobs.Job``."""
    rows = []
    for job in jobs:
        end = job.finished_at or (time.time() if job.status == "running" else None)
        rows.append(
            {
                "job": job.id,
                "status": STATUS_LABELS.get(job.status, job.status),
                "dataset": job.params.get("dataset"),
                "model": job.params.get("model"),
                "epochs": job.params.get("epochs"),
                "submitted": format_time(job.submitted_at),
                "started": format_time(job.started_at),
                "finished": format_time(job.finished_at),
                "duration": format_duration(
                    end - job.started_at if job.started_at and end else None
                ),
                "by": job.submitted_by or "—",
                "node": getattr(job, "node", None) or "—",
                "result": job.run_name or job.error or "",
            }
        )
    return rows


def job_table_ui(jobs: Sequence[Any]) -> None:
    """The job table, newest first."""
    if not jobs:
        st.info("No training jobs yet. Researchers queue one from the form in the sidebar.")
        return
    st.dataframe(
        job_rows(jobs),
        hide_index=True,
        width="stretch",
        key="retrain_job_table",
        column_config={"job": st.column_config.NumberColumn("job", format="#%d")},
    )


def job_picker_ui(jobs: Sequence[Any]) -> int | None:
    """Choose the job to follow; defaults to the running job, else the newest one."""
    if not jobs:
        return None
    ids = [job.id for job in jobs]
    by_id = {job.id: job for job in jobs}
    if st.session_state.get("retrain_job") not in ids:
        running = [job.id for job in jobs if job.status == "running"]
        st.session_state["retrain_job"] = running[0] if running else ids[0]
    return st.selectbox(
        "Follow job",
        ids,
        key="retrain_job",
        # no status in the label: it changes while the job runs, the table shows it
        format_func=lambda i: (
            f"#{i} · {by_id[i].params.get('dataset')} / {by_id[i].params.get('model')} · "
            f"submitted {format_time(by_id[i].submitted_at)}"
        ),
    )


def progress_figure(progress: Sequence[Mapping[str, Any]]):
    """Plotly figure per epoch: training loss (top) and validation AUC on a 0-1 scale (bottom).

    Two stacked panels rather than twin y-axes: twin axes invite reading one curve against the
    other's scale.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    epochs = [row["epoch"] for row in progress]
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.12,
        subplot_titles=("Training loss", "Validation AUC"),
    )
    fig.add_trace(
        go.Scatter(
            x=epochs,
            y=[r.get("loss") for r in progress],
            name="training loss",
            mode="lines+markers",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=epochs,
            y=[r.get("val_auc") for r in progress],
            name="validation AUC",
            mode="lines+markers",
        ),
        row=2,
        col=1,
    )
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="AUC", range=[0, 1.02], row=2, col=1)
    fig.update_xaxes(title_text="epoch", row=2, col=1)
    fig.update_xaxes(dtick=1 if len(epochs) <= 20 else None)
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 40, "b": 10}, showlegend=False)
    return fig


def job_progress_ui(job: Any, progress: Sequence[Mapping[str, Any]], can_cancel: bool) -> bool:
    """Live view of one job: state, epoch x of y, curves, log tail, Cancel.

    Args:
        job: a ``core.jobs.Job`` with its log.
        progress: its epoch rows (``JobStore.progress``).
        can_cancel: show the Cancel button (researchers, active jobs).

    Returns:
        True when Cancel was clicked on this run.
    """
    from core.joblog import split_log

    log_view = split_log(job.log or "")
    params = job.params
    st.subheader(f"Job #{job.id}: {params.get('dataset')} / {params.get('model')}")
    st.caption(
        f"{STATUS_LABELS.get(job.status, job.status)} · submitted {format_time(job.submitted_at)}"
        f" by {job.submitted_by or 'unknown'} · lr {params.get('learning_rate')} · batch "
        f"{params.get('batch_size')} · augment {'on' if params.get('augment') else 'off'} · "
        f"seed {params.get('seed')}"
        + (
            f" · fine-tuned blocks {params.get('fine_tune_blocks')}"
            if params.get("model") == "vgg16"
            else ""
        )
    )

    total = (progress[-1].get("epochs") if progress else None) or params.get("epochs") or 1
    done = progress[-1]["epoch"] if progress else 0
    if job.status == "queued":
        st.info("Waiting in the queue: one job trains at a time.")
    elif job.status == "running":
        note = " · cancel requested, stopping at the next batch" if job.cancel_requested else ""
        st.progress(min(1.0, done / total), text=f"Epoch {done} of {total} (at most){note}")
    elif job.status == "succeeded":
        st.success(
            f"Finished: saved as run **{job.run_name}**. It now appears with the other "
            "models on the Experiments, Grad-CAM and Home pages, marked *experimental*: pages "
            "keep opening on the reference runs until a researcher promotes it with "
            f"`python -m core.catalog promote {job.run_name}`."
        )
        run_link_ui(job.run_name)
    elif job.status == "failed":
        # the error itself, plainly; the Python traceback waits in "Technical details"
        reason = log_view.error or job.error or "no reason recorded"
        st.error(
            "  \n".join(["**Failed:** " + reason.splitlines()[0], *reason.splitlines()[1:]])
            # a paragraph of its own: after "4. ..." it would read as part of the last step
            + "\n\nNothing was saved to the model registry.",
            icon=":material/error:",
        )
    elif job.status == "cancelled":
        st.warning("Cancelled. Nothing was saved to the model registry.")

    if progress:
        last = progress[-1]
        cols = st.columns(3)
        cols[0].metric("Epoch", f"{done} / {total}")
        cols[1].metric(
            "Training loss", f"{last['loss']:.4f}" if last.get("loss") is not None else "—"
        )
        best = max(
            (row["val_auc"] for row in progress if row.get("val_auc") is not None), default=None
        )
        cols[2].metric(
            "Validation AUC",
            f"{last['val_auc']:.3f}" if last.get("val_auc") is not None else "—",
            help=f"Best so far: {best:.3f}" if best is not None else None,
        )
        st.plotly_chart(progress_figure(progress), key=f"retrain_curve_{job.id}", width="stretch")
    elif job.status == "running":
        st.caption(
            "Loading data and building the model; the first epoch's numbers appear when it ends."
        )

    lines = log_view.text.rstrip().splitlines()
    with st.expander(f"Log (last {LOG_TAIL_LINES} lines)"):
        st.code("\n".join(lines[-LOG_TAIL_LINES:]) or "(empty)", language="text")
    if log_view.details:
        with st.expander("Technical details (Python traceback, for developers)"):
            st.code(log_view.details, language="text")

    if can_cancel and job.status in ("queued", "running"):
        return st.button(
            "Cancel job",
            key=f"retrain_cancel_{job.id}",
            disabled=bool(job.cancel_requested),
            help="Stops the run; nothing is saved.",
        )
    return False


def run_link_ui(run_name: str | None) -> None:
    """Link to the Experiments page when the app's navigation has it; else just the name."""
    if not run_name:
        return
    for target in ("../pages/experiments.py", "pages/experiments.py"):
        try:
            st.page_link(
                target,
                label=f"Compare {run_name} on the Experiments page",
                icon=":material/insights:",
                query_params={"run": run_name},  # opens on this run, not the default one
            )
            return
        except Exception:  # noqa: BLE001 - page not registered (standalone page, tests)
            continue
    st.code(run_name, language="text")


def password_ui(locked_for_s: float = 0.0) -> str | None:
    """Password box of the ``"password"`` access mode; returns the password on submit."""
    with st.sidebar.form("retrain_login_form"):
        st.markdown("**Researcher sign-in**")
        password = st.text_input("Researcher password", type="password", key="retrain_password")
        submitted = st.form_submit_button(
            "Unlock retraining", key="retrain_unlock", disabled=locked_for_s > 0
        )
    if locked_for_s > 0:
        st.sidebar.warning(f"Too many wrong passwords: try again in {int(locked_for_s) + 1} s.")
    return password if submitted else None


def worker_settings_ui(
    differences: Sequence[str],
    job_id: int | None,
    restart_pending: bool,
    can_restart: bool,
    autostart: bool,
) -> bool:
    """The note shown when the worker runs with other settings than the app.

    Args:
        differences: one line per differing setting (``SettingDiff.describe()``).
        job_id: the job the worker is training, if any.
        restart_pending: a restart was already requested (the worker exits after its job).
        can_restart: the viewer may restart the worker (researcher role).
        autostart: the app manages the worker (``JOBS_WORKER_AUTOSTART`` is not 0).

    Returns:
        True when "Restart worker" was clicked on this run.
    """
    lines = "\n".join(f"- {line}" for line in differences)
    doing = f"job #{job_id}" if job_id is not None else "its current job"
    if restart_pending:
        st.info(
            f"**Worker restart requested.** The worker finishes {doing}, then exits; a new "
            f"worker with this app's settings takes over the queue.\n\n{lines}"
        )
        return False
    head = (
        "**The training worker runs with other settings than this app**, so the jobs it "
        f'runs may fail ("… is not available") or save somewhere else:\n\n{lines}\n\n'
    )
    if not autostart:
        st.warning(
            head + "The app does not start or stop workers here (JOBS_WORKER_AUTOSTART=0):\n\n"
            "1. Stop the worker (Ctrl-C in its terminal, or stop its service).\n"
            "2. Start it again with the same settings as the app: "
            "`python -m core.jobs worker`."
        )
        return False
    st.warning(
        head + f"It is training {doing}, so it was not restarted automatically. "
        f"**Restart worker** lets {doing} finish (nothing is lost), then a new worker with "
        "this app's settings takes over. To restart sooner, cancel the job first."
    )
    if not can_restart:
        st.caption("A researcher can restart the worker.")
        return False
    return st.button("Restart worker", key="retrain_restart_worker", icon=":material/restart_alt:")
