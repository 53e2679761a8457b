"""Site configuration: one YAML file per gateway -> typed, frozen dataclasses.

Validation is strict (unknown keys, wrong types and impossible values are errors) and works on
the YAML node tree, so every problem names its key path and line. All problems are collected and
raised together as one `ConfigError`.

Each setting's type, default, range and meaning sit next to its dataclass field (`_setting(...)`);
checks that involve several fields live in the `_check_*` functions beside the dataclasses.

  _errors    ConfigError, ConfigIssue
  _reader    the strict reading of YAML nodes with their lines, field specs and value checks
  _model     SiteConfig and the general sections (cloud, tls, authorization, sessions, clock)
  _chargers  chargers (ChargerBase; ChargerConfig: Modbus), their Modbus endpoints and meters,
             RFID readers
  _ocpp      the `ocpp:` central system and `protocol: ocpp` chargers (OcppChargerConfig)
  _site      load management: the `site:` grid connection and `circuits:`
  _load      load_config, parse_config_text and the checks across sections
"""
from __future__ import annotations

from ._chargers import (
    BAUDRATES,
    CHARGER_MODELS,
    METER_MODELS,
    OCPP_MODELS,
    PROTOCOLS,
    ChargerBase,
    ChargerConfig,
    MeterConfig,
    ModbusEndpoint,
    ReaderConfig,
)
from ._errors import ConfigError, ConfigIssue
from ._load import load_config, parse_config_text
from ._model import AuthorizationConfig, ClockConfig, CloudConfig, SessionsConfig, SiteConfig, TlsConfig
from ._ocpp import AnyChargerConfig, OcppChargerConfig, OcppConfig, OcppTlsConfig
from ._reader import MAX_TOPIC_LEVEL_CHARS
from ._site import CircuitConfig, GridConnectionConfig

__all__ = [
    "BAUDRATES",
    "CHARGER_MODELS",
    "MAX_TOPIC_LEVEL_CHARS",
    "METER_MODELS",
    "OCPP_MODELS",
    "PROTOCOLS",
    "AnyChargerConfig",
    "AuthorizationConfig",
    "ChargerBase",
    "ChargerConfig",
    "CircuitConfig",
    "ClockConfig",
    "CloudConfig",
    "ConfigError",
    "ConfigIssue",
    "GridConnectionConfig",
    "MeterConfig",
    "ModbusEndpoint",
    "OcppChargerConfig",
    "OcppConfig",
    "OcppTlsConfig",
    "ReaderConfig",
    "SessionsConfig",
    "SiteConfig",
    "TlsConfig",
    "load_config",
    "parse_config_text",
]
