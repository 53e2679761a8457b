"""Errors raised by drivers. Each says which device, which register, and whether a retry helps.

DeviceError
 +-- RetryableDeviceError        the next poll may succeed
 |    +-- DeviceTimeout          no answer within the timeout (after the retries)
 |    |    +-- CallTimeout       OCPP: a call to the charge point got no answer in time
 |    +-- DeviceUnreachable      connection refused/reset, port gone
 |    |    +-- ChargerNotConnected  OCPP: no websocket from the charge point, or its boot not answered yet
 |    +-- NoValue                the device answered "no value" (e.g. Bender 0xFFFFFFFF)
 +-- PermanentDeviceError        retrying the same thing will not help
      +-- ModbusExceptionResponse the device rejected the request (exception code)
      +-- PortSettingRefused     the serial port refused a setting (parity on a pty)
      +-- UnsupportedByModel     the model's map lacks what was asked (or forbids it)
      +-- EnergyCounterError     the agent's own lifetime counter file is unusable
      +-- CallError              OCPP: the charge point answered a call with a CallError (its error code)
      +-- InvalidAnswer          OCPP: the charge point's answer to a call is not what OCPP defines
"""
from __future__ import annotations


class DeviceError(Exception):
    retryable: bool = False

    def __init__(self, message: str, *, device: str = "", register: int | None = None) -> None:
        self.device = device
        self.register = register
        where = device + (f" register {register}" if register is not None else "")
        super().__init__(f"{where}: {message}" if where else message)


class RetryableDeviceError(DeviceError):
    retryable = True


class DeviceTimeout(RetryableDeviceError):
    pass


class DeviceUnreachable(RetryableDeviceError):
    pass


class NoValue(RetryableDeviceError):
    pass


class PermanentDeviceError(DeviceError):
    retryable = False


class ModbusExceptionResponse(PermanentDeviceError):
    def __init__(self, message: str, *, code: int, device: str = "", register: int | None = None) -> None:
        self.code = code
        super().__init__(f"{message} (Modbus exception {code})", device=device, register=register)


class PortSettingRefused(PermanentDeviceError):
    pass


class UnsupportedByModel(PermanentDeviceError):
    pass


class EnergyCounterError(PermanentDeviceError):
    pass


class ChargerNotConnected(DeviceUnreachable):
    pass


class CallTimeout(DeviceTimeout):
    pass


class CallError(PermanentDeviceError):
    def __init__(self, message: str, *, code: str, device: str = "") -> None:
        self.code = code
        super().__init__(f"{message} (OCPP {code})", device=device)


class InvalidAnswer(PermanentDeviceError):
    pass
