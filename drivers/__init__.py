"""Hardware drivers: chargers and meters over Modbus, RFID readers.

Drivers know nothing of the store, the cloud or sessions; they turn hardware into
readings and taps, and commands into register writes.
"""
