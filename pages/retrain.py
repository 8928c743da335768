"""Retrain: queue a training job from the sidebar and follow it live.

Training never runs here: the form queues a job in SQLite (core.jobs) and a separate worker
process trains it. Everyone sees the job list; only researchers may queue or cancel jobs
(core.auth decides how a researcher is recognised).
"""

import time
from typing import Any

import streamlit as st

from app import retrain_ui
from core import auth, config, data, info, jobs
from core.jobs import control as worker_control

POLL_S = 2.0


def _secrets() -> dict[str, Any]:
    """``st.secrets`` as a dict; empty when there is no secrets.toml (or it cannot be parsed)."""
    try:
        return {key: st.secrets[key] for key in st.secrets}
    except Exception:  # noqa: BLE001 - FileNotFoundError, TOML errors: treat as unconfigured
        return {}


def _access() -> tuple[str, bool, str | None]:
    """Return ``(mode, is_researcher, user_label)`` and draw the access note."""
    secrets = _secrets()
    hash_value = secrets.get("researcher_password_hash")
    address = st.get_option("server.address")
    mode = auth.access_mode("auth" in secrets, hash_value, address)

    if mode == "login":
        user = st.user
        logged_in = bool(user.get("is_logged_in", False))
        email = user.get("email")
        allow = secrets.get("researchers")
        allow_list = list(allow) if allow is not None else None
        if not logged_in:
            st.info(
                "**Access: identity provider sign-in.** Clinicians can follow the jobs "
                "below; sign in as a researcher to queue or cancel training."
            )
            if st.sidebar.button("Sign in to retrain", key="retrain_login", type="primary"):
                try:
                    st.login()
                except Exception as exc:  # noqa: BLE001 - e.g. Authlib missing, bad [auth]
                    st.sidebar.error(
                        f"Sign-in is not working: {exc}\n\n"
                        "1. Install Authlib (`pip install 'Authlib>=1.3.2'`).\n"
                        "2. Check the `[auth]` section of `.streamlit/secrets.toml` "
                        "(redirect_uri, cookie_secret, client_id, client_secret, "
                        "server_metadata_url)."
                    )
            return mode, False, None
        researcher = auth.is_researcher_email(email, allow_list)
        who = email or user.get("name") or "signed-in user"
        if researcher:
            st.success(
                f"**Access: identity provider sign-in.** Signed in as {who}: researcher "
                "(may queue and cancel training)."
            )
        else:
            st.warning(
                f"**Access: identity provider sign-in.** Signed in as {who}, who is not "
                "on the researcher list (`researchers` in secrets.toml): view only."
            )
        if st.sidebar.button("Sign out", key="retrain_logout"):
            st.logout()
        return mode, researcher, who

    if mode == "password":
        unlocked = bool(st.session_state.get("retrain_unlocked"))
        if not auth.is_valid_hash(hash_value):
            st.error(
                "**Access: researcher password**, but `researcher_password_hash` in "
                "`.streamlit/secrets.toml` is not a valid hash, so nobody can unlock "
                "retraining.\n\n"
                "1. Run `python -m core.auth hash` and type the password.\n"
                "2. Replace the value in secrets.toml with the printed hash.\n"
                "3. Restart the app."
            )
            return mode, False, None
        if unlocked:
            st.success(
                "**Access: researcher password** (stored hashed in secrets.toml). "
                "Unlocked for this browser session."
            )
            if st.sidebar.button("Lock retraining", key="retrain_lock"):
                st.session_state["retrain_unlocked"] = False
                st.rerun()
            return mode, True, "researcher (password)"
        st.info(
            "**Access: researcher password** (stored hashed in secrets.toml). Clinicians "
            "can follow the jobs below; enter the researcher password in the sidebar to "
            "queue or cancel training."
        )
        lockout = auth.PasswordLockout(
            failures=int(st.session_state.get("retrain_failures", 0)),
            locked_until=float(st.session_state.get("retrain_locked_until", 0.0)),
        )
        password = retrain_ui.password_ui(lockout.remaining_s(time.time()))
        if password is not None and lockout.may_try(time.time()):
            if auth.verify_password(password, hash_value):
                lockout.success()
                st.session_state["retrain_unlocked"] = True
                st.session_state["retrain_failures"] = lockout.failures
                st.rerun()
            locked = lockout.failure(time.time())
            st.session_state["retrain_failures"] = lockout.failures
            if locked:
                st.session_state["retrain_locked_until"] = lockout.locked_until
                st.rerun()  # redraw the form disabled, with the lock-out note
            st.sidebar.error("Wrong password.")
        return mode, False, None

    if mode == "localhost":
        st.info(
            f"**Access: local only.** No sign-in is configured, so retraining is allowed "
            f"because this server listens only on `{address}` (nobody on the network can "
            "reach it). Configure a researcher password before exposing the app."
        )
        return mode, True, "local user"

    st.warning(
        "**Access: view only.** Retraining is disabled: no sign-in is configured and this "
        f"server listens on {'all network interfaces' if not address else f'`{address}`'}, "
        "so anyone who can reach it could start jobs. To enable retraining, do one of:\n\n"
        "1. Set a researcher password: run `python -m core.auth hash`, then put "
        '`researcher_password_hash = "<printed hash>"` in `.streamlit/secrets.toml`.\n'
        "2. Configure an identity provider in an `[auth]` section of `.streamlit/secrets.toml` "
        "(researchers then sign in with their account; optionally list their e-mails in "
        "`researchers = [...]`).\n"
        "3. For use on this machine only, start the app with `--server.address 127.0.0.1`.\n\n"
        "Then restart the app."
    )
    return mode, False, None


def _dataset_choices() -> list[dict[str, Any]]:
    present = {row["flag"] for row in data.local_status() if row["present"] and row["size"] == 28}
    flags = sorted(info.FLAGS, key=lambda f: (f not in present, f))
    return [
        {"flag": f, "is_3d": info.is_3d(f), "present": f in present, "note": info.modality_note(f)}
        for f in flags
    ]


def _cluster(store: jobs.JobStore) -> dict[str, Any] | None:
    """The Ray cluster the worker runs jobs on (as it last described it), or None: local."""
    executor = jobs.worker_status(store).executor
    return executor if executor and executor.get("kind") == "ray" else None


def _submit_form(store: jobs.JobStore, who: str | None) -> None:
    params = retrain_ui.retrain_form_ui(
        _dataset_choices(), config.MODEL_FAMILIES, cluster=_cluster(store)
    )
    if params is None:
        return
    resources, resource_errors = jobs.check_resources(params.pop("resources", None))
    checked = jobs.check_params(params)
    if not checked.ok or resource_errors:
        errors = [*checked.errors, *resource_errors]
        st.sidebar.error(
            "The job was not queued:\n\n" + "\n".join(f"- {message}" for message in errors)
        )
        return
    job_id = store.submit(checked.config.to_dict(), submitted_by=who, resources=resources)
    st.session_state["retrain_job"] = job_id  # follow the new job (picker not drawn yet)
    st.toast(f"Job #{job_id} queued", icon=":material/model_training:")
    st.sidebar.success(
        f"Job #{job_id} queued: {checked.config.dataset} / "
        f"{checked.config.model}, {checked.config.epochs} epochs."
    )
    for message in checked.warnings:
        st.sidebar.warning(message)


def _worker_note(store: jobs.JobStore, researcher: bool, running: set[int]) -> None:
    status = jobs.worker_status(store)
    found = worker_control.check(store, status)
    if found.stale and not status.stop_requested:
        # an idle worker with another MEDMNIST_ROOT etc. would fail every job: replace it now
        pid = worker_control.restart_if_stale_and_idle(store, status)
        if pid is not None:
            names = ", ".join(d.name for d in found.differences)
            st.info(
                f"The training worker was idle and ran with other settings than this app "
                f"({names}); it was restarted with this app's settings (pid {pid})."
            )
            return
    if status.alive and status.responsive:
        # the worker's row can lag the job row by a heartbeat: trust the job table
        doing = f"training job #{status.job_id}" if status.job_id in running else "idle"
        st.caption(
            f"Worker: running (pid {status.pid}, {doing}, heartbeat "
            f"{status.heartbeat_age_s:.0f} s ago). {retrain_ui.executor_note(status.executor)}"
        )
        if found.stale:
            _stale_worker_note(store, found, researcher, running)
    elif status.starting:
        st.caption("Worker: starting" + (f" (pid {status.pid})" if status.pid else "") + ".")
    elif status.alive:
        st.warning(
            "A worker holds the queue lock but has not reported for a while; it may be "
            "busy loading data or stuck. Its log: "
            f"`{jobs.worker_log_path(store.path)}`."
        )
    else:
        st.warning(
            "No training worker is running, so queued jobs wait. The app starts one "
            "when it opens; you can also run `python -m core.jobs worker` from the "
            "project folder."
        )
        if researcher and st.button("Start worker", key="retrain_start_worker"):
            pid = jobs.ensure_worker(store)
            if pid is None:
                st.info("Worker autostart is off (JOBS_WORKER_AUTOSTART=0); start it by hand.")
            else:
                st.toast(f"Worker started (pid {pid})")


def _stale_worker_note(
    store: jobs.JobStore, found: worker_control.WorkerCheck, researcher: bool, running: set[int]
) -> None:
    """Which settings differ, and "Restart worker" (it restarts after the running job)."""
    job_id = found.status.job_id if found.status.job_id in running else None
    clicked = retrain_ui.worker_settings_ui(
        [d.describe() for d in found.differences],
        job_id,
        restart_pending=found.status.stop_requested,
        can_restart=researcher,
        autostart=jobs.autostart_enabled(),
    )
    if not clicked:
        return
    outcome = worker_control.restart_worker(store)
    st.toast(
        {
            "after_job": f"The worker restarts after job #{outcome.job_id}",
            "restarted": f"Worker restarted (pid {outcome.pid})",
            "timeout": "The worker was asked to stop; it exits before its next job",
        }.get(outcome.kind, "Worker restart is off (JOBS_WORKER_AUTOSTART=0)")
    )
    st.rerun(scope="fragment")


def _jobs_panel(store: jobs.JobStore, researcher: bool) -> None:
    job_list = store.list()
    any_active = any(job.is_active for job in job_list)

    @st.fragment(run_every=POLL_S if any_active else None)
    def panel() -> None:
        try:
            _panel_body(store, researcher, any_active)
        except jobs.StoreError as exc:
            st.error(
                f"The job database cannot be read right now: {exc}. Retrying in {POLL_S:.0f} s."
            )
        except Exception as exc:  # noqa: BLE001 - fragment reruns bypass main()'s handler
            st.error(f"Could not show the jobs: {type(exc).__name__}: {exc}")

    panel()


def _panel_body(store: jobs.JobStore, researcher: bool, any_active: bool) -> None:
    current = store.list()
    _worker_note(store, researcher, {job.id for job in current if job.status == "running"})
    retrain_ui.job_table_ui(current)
    job_id = retrain_ui.job_picker_ui(current)
    if job_id is not None:
        job = store.get(job_id)
        if job is not None:
            cancel = retrain_ui.job_progress_ui(job, store.progress(job_id), can_cancel=researcher)
            if cancel:
                result = store.request_cancel(job_id)
                st.toast(
                    f"Job #{job_id}: "
                    + {
                        "cancelled": "cancelled before it started",
                        "running": "cancel requested; it stops at the next batch",
                    }.get(result or "", "already finished")
                )
                st.rerun(scope="fragment")
    if any_active and not any(job.is_active for job in current):
        st.rerun()  # everything finished: redraw once and stop polling


def main() -> None:
    st.title("Retrain a model")
    st.caption(
        "Queue a training run on a MedMNIST dataset and follow it live. A background worker "
        "runs the jobs, on this machine or on a Ray cluster (docs/scale-out.md); finished "
        "runs join the model registry."
    )
    try:
        store = jobs.JobStore()
        _mode, researcher, who = _access()
        if researcher:
            _submit_form(store, who)
        else:
            st.sidebar.info("Retraining needs the researcher role; you can follow jobs here.")
        _jobs_panel(store, researcher)
    except jobs.StoreError as exc:
        st.error(
            f"The job database cannot be read: {exc}\n\n"
            f"1. Check that `{config.jobs_db()}` (set by JOBS_DB) is on a writable local "
            "disk.\n"
            "2. If the file is damaged, stop the app and worker, move it aside and "
            "restart (queued jobs in it are then lost)."
        )
    except Exception as exc:  # noqa: BLE001 - never show a traceback to a clinician
        st.error(f"The Retrain page hit an unexpected problem: {type(exc).__name__}: {exc}")


main()
