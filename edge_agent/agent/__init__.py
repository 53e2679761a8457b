"""The agent: one site's chargers, readers, sessions, store and cloud link, wired one way.

  _agent      Agent: the composition root, an async context manager that owns every task
  _taps       readers' taps -> authorization -> the EVSE they are for
  _evse       one controller per EVSE: poll, the session machine's actions, the only writer of its offer
  _recorder   one EVSE's sessions on disk: start, samples, end (priced), resume, clock steps
  _billing    what a session costs, at its end and while it runs
  _journal    events for the cloud, and what a full disk means
  _online     asking the cloud about a card
  _inbound    what the cloud sends, by topic
  _commands   the cloud's commands, each answered once
  _status     ~/state, ~/evse/{id}/status, the technician's live view
  _chargers   the drivers a config's chargers and site meter get
"""
from ._agent import Agent
from ._chargers import create_evse_charger, create_site_meter

__all__ = ["Agent", "create_evse_charger", "create_site_meter"]
