"""The cloud link: MQTT connection, outbox sender, and checks of what the cloud sends.

Where a session becomes an MQTT message: store outbox -> OutboxSender -> MqttLink. The events'
envelope and data are built by `edge_agent.cloud.events` (Event, session_started, ...).
"""
from __future__ import annotations

from . import events
from ._credentials import LinkCredentials, TlsFiles, link_credentials, lists_verify
from ._download import DownloadError, DownloadPolicy, download_with_retries, shown_url
from ._link import Inbound, MqttLink, describe_connect_error
from ._outbox import OutboxSender
from ._payloads import (
    MAX_PAYLOAD_BYTES,
    MAX_VERSION,
    AuthResponse,
    Command,
    PayloadError,
    TariffList,
    UserList,
    UserListUrl,
    check_ack,
    check_auth_response,
    check_command,
    check_request_id,
    check_tariff_list,
    check_user,
    check_user_list,
    check_user_list_url,
    is_user_list_url,
    parse_json_object,
    printable,
    salvaged_request_id,
)
from ._rejections import RejectionLog
from ._topics import Topics
from ._userstream import UserListReader
from .events import Event

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MAX_VERSION",
    "AuthResponse",
    "Command",
    "DownloadError",
    "DownloadPolicy",
    "Event",
    "Inbound",
    "LinkCredentials",
    "MqttLink",
    "OutboxSender",
    "PayloadError",
    "RejectionLog",
    "TariffList",
    "TlsFiles",
    "Topics",
    "UserList",
    "UserListReader",
    "UserListUrl",
    "check_ack",
    "check_auth_response",
    "check_command",
    "check_request_id",
    "check_tariff_list",
    "check_user",
    "check_user_list",
    "check_user_list_url",
    "describe_connect_error",
    "download_with_retries",
    "events",
    "is_user_list_url",
    "link_credentials",
    "lists_verify",
    "parse_json_object",
    "printable",
    "salvaged_request_id",
    "shown_url",
]
