"""Request and response models of the batch endpoints (POST/GET/DELETE /batches). A batch takes what
POST /jobs takes for every item (JobRequestFields), and each item its input and a few overrides whose
declarations are those of CreateJobRequest: nothing about an option is declared twice."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model, model_validator

from functions.api.schemas import CreateJobRequest, CreateJobResponse, JobRequestFields, WebhookDeliveryResponse
from shared.domain.batches import MAX_BATCH_ITEMS, BatchStatus
from shared.domain.options import NoNul
from shared.domain.status import JobStatus
from shared.domain.workflow import AUDIO_WORKFLOWS

ITEM_INPUTS = ("audio_url", "audio_filename")
"""An item is audio to fetch (`audio_url`) or a file the client uploads (`audio_filename`)."""
ITEM_OVERRIDES = ("source_language", "languages", "speakers_expected", "prompt", "hotwords")
"""What an item may set for itself, over the batch's value: what differs from one recording to the next."""

BatchItem: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "BatchItem",
    __config__=ConfigDict(extra="forbid"),
    __doc__="One item of a batch: `audio_url` or `audio_filename`, and optionally its own values of "
    + ", ".join(ITEM_OVERRIDES)
    + " (as on POST /jobs).",
    **{
        name: (CreateJobRequest.model_fields[name].annotation, CreateJobRequest.model_fields[name])
        for name in ITEM_INPUTS + ITEM_OVERRIDES
    },
)


class CreateBatchRequest(JobRequestFields):
    """POST /batches: what every item's job is created with (as on POST /jobs), and the items — listed,
    or the audio blobs of an Azure Blob container. `callback_url` receives one `batch.completed`."""

    items: list[BatchItem] | None = Field(default=None, min_length=1, max_length=MAX_BATCH_ITEMS)  # type: ignore[valid-type]
    """1 to 1,000 items, each becoming a job of the calling key, in this order."""
    container_url: Annotated[str, StringConstraints(min_length=1, max_length=8192), NoNul] | None = None
    """An Azure Blob container URL with a SAS allowing list and read: each audio blob in it becomes an
    item (fetched with that SAS). Instead of `items`; audio workflows only."""

    @model_validator(mode="after")
    def _one_source(self) -> CreateBatchRequest:
        if (self.items is None) == (self.container_url is None):
            raise ValueError("give items (1 to 1000) or container_url, not both and not neither")
        if self.audio_url is not None:
            raise ValueError("audio_url belongs in each item; a batch takes items or container_url")
        if self.container_url is not None and self.workflow_type not in AUDIO_WORKFLOWS:
            raise ValueError(f"container_url gives audio; {self.workflow_type} takes an uploaded transcript")
        for index, item in enumerate(self.item_fields()):
            if ("audio_url" in item) == ("audio_filename" in item):
                raise ValueError(
                    f"items[{index}]: give audio_url (to fetch) or audio_filename (to upload), one of them"
                )
        return self

    def item_fields(self) -> list[dict[str, Any]]:
        """Each listed item's own fields, as given."""
        items: list[BaseModel] = self.items or []
        return [item.model_dump(exclude_none=True) for item in items]

    def job_fields(self) -> dict[str, Any]:
        """What every item's POST /jobs body starts from: the batch's fields the client gave, no callback
        (the batch has the one webhook)."""
        given = self.model_fields_set - {"items", "container_url", "callback_url"}
        return self.model_dump(include=given, mode="json")


class BatchItemCreated(CreateJobResponse):
    """An item's job as created: `queued` (an audio_url), `pending_upload` (upload the file to
    `upload_url`, then POST /jobs/{id}/start), or `failed` with the reason (a bad item fails alone)."""

    error_message: str | None = None


class CreateBatchResponse(BaseModel):
    batch_id: uuid.UUID
    job_ids: list[uuid.UUID]
    """One job per item, in the items' order (for container_url, by blob name)."""
    status: BatchStatus
    items: list[BatchItemCreated]


class BatchResponse(BaseModel):
    """GET /batches/{id}: the batch and its jobs counted by status."""

    batch_id: uuid.UUID
    status: BatchStatus
    """`pending_upload` (every job waits for its upload), `processing`, then `completed` once every job has
    ended — or `cancelled` when DELETE /batches/{id} was asked for."""
    workflow_type: str
    source: str
    """`items` or `container`."""
    total: int
    counts: dict[str, int]
    """Jobs by status, every job status listed (0 when none)."""
    created_at: datetime
    cancel_requested_at: datetime | None = None
    completed_at: datetime | None = None
    webhooks: list[WebhookDeliveryResponse] = []
    """The `batch.completed` delivery to callback_url and its attempts."""


class BatchResultItem(BaseModel):
    job_id: uuid.UUID
    audio_url: str | None
    """The item's audio_url without its query (a SAS is a secret); null for an uploaded file."""
    audio_filename: str
    status: JobStatus
    error_message: str | None = None
    results_url: str
    """Where the job's results are read (GET /jobs/{id}/results; 409 while nothing is ready)."""


class BatchResultsResponse(BaseModel):
    batch_id: uuid.UUID
    status: BatchStatus
    items: list[BatchResultItem]
