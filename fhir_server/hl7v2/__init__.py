"""HL7 v2 interface: MLLP listener, inbound mapping to FHIR transactions, outbound SIU outbox."""

from .inbound import inbound_status, mllp_handler, process_message, process_message_ex, replay
from .listener import send_mllp, serve_mllp, start_mllp_server
from .mapping import map_message, supported_types
from .outbound import (build_siu, deliver_pending, install_outbound, outbox_status, retry_failed,
                       run_outbox_worker, start_outbox_thread, uninstall_outbound)

__all__ = [
    "build_siu", "deliver_pending", "inbound_status", "install_outbound", "map_message", "mllp_handler",
    "outbox_status", "process_message", "process_message_ex", "replay", "retry_failed", "run_outbox_worker",
    "send_mllp", "serve_mllp", "start_mllp_server", "start_outbox_thread", "supported_types", "uninstall_outbound",
]
