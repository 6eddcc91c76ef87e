"""Enrichment and classification of opens: who (client, device, OS), where (country, network) and what
(human, proxy, prefetch, scanner or self, with a reason). Pure and offline: no call here touches the network.

Typical use, once per process::

    enricher = Enricher(GeoLookup(os.environ.get("DEADPIXEL_GEOIP_DATABASE")), self_ips=["203.0.113.7"])
    enrichment = enricher.enrich(ip=ip, user_agent=ua, method="GET", seconds_after_send=12.5)
"""

from deadpixel.enrich.classify import Enricher, Enrichment, Verdict
from deadpixel.enrich.geo import GeoLookup, Place
from deadpixel.enrich.message import MessageEvent, adjust_message_verdicts
from deadpixel.enrich.networks import Networks
from deadpixel.enrich.useragent import DEVICES, ClientInfo, parse_user_agent
from deadpixel.events import KINDS, MACHINE_KINDS

__all__ = [
    "DEVICES",
    "KINDS",
    "MACHINE_KINDS",
    "ClientInfo",
    "Enricher",
    "Enrichment",
    "GeoLookup",
    "MessageEvent",
    "Networks",
    "Place",
    "Verdict",
    "adjust_message_verdicts",
    "parse_user_agent",
]
