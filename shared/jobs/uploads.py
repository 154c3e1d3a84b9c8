"""Taking an upload in when its job starts (docs/SECURITY.md, "An upload URL's lifetime ends when its job
starts").

An upload URL names one blob, `{job_id}/{file}`; on Azure it is a SAS, which cannot be withdrawn before
it expires. So when the job starts, the upload is copied server-side to `{job_id}/input/{file}` — a name
no upload URL is ever made for (a file name holds no `/`, shared by functions.api.schemas.safe_filename)
— the probe reads that copy, the job's `audio_blob_path` is set to it in the transaction that starts the
job, and only after that commit is the upload itself deleted. A write through the old URL afterwards
lands on a blob nothing reads, under the job's folder, which retention and purge delete whole.

Crash-safe in either order of events: killed before the commit, the job is still `pending_upload` and
names its upload, which is still there, and a retried start copies it again over the same name; killed
after the commit, the job names the copy and the upload left behind goes with the job's folder.
"""

from __future__ import annotations

import logging
import uuid

from shared.storage import BlobStore

log = logging.getLogger(__name__)

INPUT_FOLDER = "input"


def input_blob_path(job_id: uuid.UUID, upload: str) -> str:
    """Where a started job's upload is read from: `{job_id}/input/{file name of the upload}`."""
    return f"{job_id}/{INPUT_FOLDER}/{upload.rsplit('/', 1)[-1]}"


def is_input_blob_path(job_id: uuid.UUID, blob: str) -> bool:
    return blob.startswith(f"{job_id}/{INPUT_FOLDER}/")


def take_in(blobs: BlobStore, container: str, job_id: uuid.UUID, upload: str) -> str:
    """Copy the upload to its input name (server-side, complete on return) and return that name; the
    caller records it in the job with the start, and then calls `let_go` to delete the upload."""
    if is_input_blob_path(job_id, upload):
        return upload
    accepted = input_blob_path(job_id, upload)
    blobs.copy(container, upload, accepted)
    return accepted


def let_go(blobs: BlobStore, container: str, upload: str, accepted: str, *, job_id: uuid.UUID) -> None:
    """Delete the upload once the start that records `accepted` has committed. The job has started
    either way: if this fails the upload is left behind, read by nothing, and deleted with the job's
    folder (shared/jobs/retention.py)."""
    if upload == accepted:
        return
    try:
        blobs.delete(container, upload)
    except Exception:
        log.warning(
            "the taken-in upload could not be deleted; it goes with the job's folder",
            exc_info=True,
            extra={"action": "upload_delete_failed", "job_id": str(job_id)},
        )
