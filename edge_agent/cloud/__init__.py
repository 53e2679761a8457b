"""The cloud link: MQTT connection, outbox sender, and checks of what the cloud sends.

Where a session becomes an MQTT message: store outbox -> OutboxSender -> MqttLink.
"""
from __future__ import annotations

from ._credentials import LinkCredentials, TlsFiles, link_credentials, lists_verify
from ._download import DownloadError, DownloadPolicy
from ._link import Inbound, MqttLink, describe_connect_error
from ._outbox import OutboxSender
from ._payloads import (
    AuthResponse,
    Command,
    PayloadError,
    TariffList,
    UserList,
    UserListUrl,
    check_ack,
    check_auth_response,
    check_command,
    check_tariff_list,
    check_user_list,
    check_user_list_url,
    parse_json_object,
)
from ._topics import Topics

__all__ = [
    "AuthResponse",
    "Command",
    "DownloadError",
    "DownloadPolicy",
    "Inbound",
    "LinkCredentials",
    "MqttLink",
    "OutboxSender",
    "PayloadError",
    "TariffList",
    "TlsFiles",
    "Topics",
    "UserList",
    "UserListUrl",
    "check_ack",
    "check_auth_response",
    "check_command",
    "check_tariff_list",
    "check_user_list",
    "check_user_list_url",
    "describe_connect_error",
    "link_credentials",
    "lists_verify",
    "parse_json_object",
]
