"""Documents: Binary content in the blob store, upload rules, attachments.

Plugin hooks: `setup` opens the blob store and installs the write transforms
for Binary (content out of the resources table) and DocumentReference
(attachment size and hashes from the stored content), and registers the
orphan-blob sweeper job (orphans.py).
"""

from __future__ import annotations


def setup(settings) -> None:
    from ..rest import rules
    from ..storage import blobs
    from . import settings as doc_settings
    from .attachments import transform_document_reference
    from .binary_content import transform_binary
    from .orphans import register as register_orphan_sweeper

    doc_settings.use(settings)
    blobs.configure(settings)
    register_orphan_sweeper()
    rules.register_preparer("Binary", lambda conn, ctx, res_id, parsed: transform_binary(conn, ctx, "Binary", res_id, parsed), "documents.binary")
    rules.register_preparer(
        "DocumentReference",
        lambda conn, ctx, res_id, parsed: transform_document_reference(conn, ctx, "DocumentReference", res_id, parsed),
        "documents.attachments",
    )
