"""The cloud link: MQTT connection, outbox sender, and checks of what the cloud sends.

Where a session becomes an MQTT message: store outbox -> OutboxSender -> MqttLink.
"""
from __future__ import annotations

from ._link import Inbound, MqttLink, TlsFiles
from ._outbox import OutboxSender
from ._payloads import (
    AuthResponse,
    Command,
    PayloadError,
    TariffList,
    UserList,
    check_ack,
    check_auth_response,
    check_command,
    check_tariff_list,
    check_user_list,
    parse_json_object,
)
from ._topics import Topics

__all__ = [
    "AuthResponse",
    "Command",
    "Inbound",
    "MqttLink",
    "OutboxSender",
    "PayloadError",
    "TariffList",
    "Topics",
    "TlsFiles",
    "UserList",
    "check_ack",
    "check_auth_response",
    "check_command",
    "check_tariff_list",
    "check_user_list",
    "parse_json_object",
]
