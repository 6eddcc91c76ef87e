"""How receiving mail servers word each reason for a failure: the phrase tables ``reasons.classify`` reads.

The phrases are matched against the server's text lower-cased, with runs of white space made one space and
typographic apostrophes made plain. Tables are tried in ``TIERS`` order and the first that matches gives the
reason, so the order is the policy: a named blocklist or a failed SPF/DKIM/DMARC check is the *sender's*
problem whatever else the text says; a refused *sender* address is not the recipient's; a disabled mailbox
is not a gone one; and the loose words ("mailbox unavailable", "rejected", "blocked") come last.

Each entry is a regular expression over that normalised text. Most are plain phrases; keep them linear
(no nested repetition), since the text comes from whoever wrote the bounce.
"""

from __future__ import annotations

import re

_AUTHENTICATION = (
    r"spf\b",
    r"sender policy framework",
    r"dkim\b",
    r"domainkeys",
    r"dmarc\b",
    r"arc validation",
    r"5\.7\.2[0-46-9]\b",  # 5.7.20-5.7.24, 5.7.26-29: the authentication codes of RFC 7372 and 8617
    r"unauthenticated (?:email|mail|message)",
    r"this mail is unauthenticated",
    r"sender is unauthenticated",
    r"requires? all senders to authenticate",
    r"not pass(?:ed)? (?:authentication|validation)",
    r"authentication (?:check|checks|results?) (?:failed|failure)",
    r"failed (?:the )?(?:sender )?authentication",
    r"could not be authenticated",
    r"does not meet ipv6 sending guidelines",
    r"sender address has null mx",
    r"(?:fails?|failed) (?:to pass )?authentication checks",
    r"(?:application-specific )?password (?:required|not accepted)",
    r"username and password",
    r"invalid credentials",
    r"not authorized to send (?:mail|email|emails) (?:directly )?on behalf",
    r"is not allowed to send (?:mail )?from <[^>]{0,200}> per its? spf",
)

_BLOCKED = (
    r"spamhaus",
    r"spamcop",
    r"barracuda",
    r"sorbs",
    r"surbl",
    r"uribl",
    r"invaluement",
    r"mailspike",
    r"senderscore",
    r"cloudmark",
    r"proofpoint\b.{0,40}\b(?:reputation|rbl)",
    r"dnsbl\b",
    r"rbl\b",
    r"rbls\b",
    r"xbl\b",
    r"pbl\b",
    r"blocked using",
    r"listed (?:at|on|in|by) (?:the )?[a-z0-9.-]*(?:bl|black ?list|block ?list|dnsbl|rbl)\b",
    r"(?:black|block|deny|ban) ?list(?:ed)?\b.{0,60}\b(?:ip|host|server|network|domain)",
    r"(?:ip|host|server|network|domain)\b.{0,60}\b(?:black|block|deny) ?list",
    r"on (?:our|a|the) (?:black|block|deny) ?list",
    r"is in (?:a|the|our) (?:black|block) ?list",
    r"blacklisted",
    r"blocklisted",
    r"denylisted",
    r"weren't sent\. please contact your internet service provider",
    r"part of their network is on our block list",
    r"banned sending ip",
    r"traffic not accepted from this ip",
    r"not currently accepting mail from your ip",
    r"originating from your ip",
    r"from your ip address",
    r"your ip (?:address )?(?:has been|is|was) (?:blocked|listed|banned|rejected|temporarily)",
    r"sending ip",
    r"ip (?:address )?(?:reputation|blocked|is blocked|has a poor)",
    r"(?:poor|bad|low) (?:email |sender |ip |domain )?reputation",
    r"reputation (?:of|problem|score|issues?)",
    r"ip/domain reputation",
    r"client host (?:\[[^\]]{0,80}\] |[^ ]{0,80} )?(?:rejected|blocked)",
    r"cannot find your hostname",
    r"cannot resolve your (?:address|hostname)",
    r"reverse dns",
    r"reverse lookup",
    r"rdns\b",
    r"ptr\b",
    r"helo command rejected",
    r"(?:bad|invalid) (?:helo|ehlo)",
    r"helo/ehlo argument",
    r"dynamic ip",
    r"dynamic/zombied",
    r"hosts with dynamic ip",
    r"residential (?:ip|address)",
    r"open (?:proxy|relay) ",
    r"temporarily deferred due to (?:unexpected volume or )?user complaints",
    r"\[ts[s]?0\d\]",  # Yahoo's deferral codes for the sending IP
    r"all messages from [^ ]{1,200} will be permanently deferred",
    r"not authorized to send email directly to our servers",
    r"access denied, bad outbound sender",
    r"client blocked from sending",
    r"blocked by (?:the )?(?:receiver|recipient)'s (?:server|system)",
    r"mail server at [^ ]{1,200} is blocked",
    r"blocked for abuse",
    r"message from [^ ]{1,200} rejected based on blacklist",
    r"banned sender\b",  # Microsoft 365's 5.7.511: the sending IP is banned
)

# The *sender's* address or domain refused: a fact about the sender, never about the recipient.
_SENDER_ADDRESS = (
    r"sender address rejected",
    r"sender (?:address |domain )?(?:is )?(?:rejected|refused|invalid|not allowed)",
    r"sender verify failed",
    r"invalid sender",
    r"emetteur invalide",  # Orange and La Poste: "Emetteur invalide. Invalid Sender."
    r"sender verification failed",
    r"domain of sender address",
    r"sender domain (?:must exist|does not exist|not found|is empty)",
    r"sender address (?:has been|is) (?:blacklisted|blocked|denied)",
    r"sender is in my black list",
    r"from: domain is invalid",
    r"mail from not owned by user",
    r"unroutable sender address",
    r"sender not pre-approved",
    r"email address is not verified",
    r"batv\b",
    r"envelope sender",
    r"null sender is not allowed",
    r"(?:sender|client) (?:was )?not authenticated",
    r"allowed-senders",
    r"unknown sender",
    r"bogus mail from",
    r"relay access denied",
    r"relaying (?:denied|disallowed|not (?:allowed|permitted))",  # Zoho: "553 Relaying disallowed"
    r"not permitted to relay",
    r"unable to relay",
    r"we do not relay",
    r"authentication required",
    r"you must (?:first )?authenticate",
    r"authentication (?:credentials invalid|failed)",
    r"not authorized to perform ses:",
    r"account not subscribed to ses",
)

# Temporary name service failures and routing loops: network trouble, not a domain that is gone.
_DNS_TROUBLE = (
    r"hop count exceeded",
    r"too many hops",
    r"host not found, try again",
    r"try again later.{0,40}\bdns\b",
    r"temporary failure in name resolution",
    r"dns (?:lookup |check )?(?:failure|timeout|timed out|servfail|temporary)",
    r"name service error.{0,200}(?:try again|server failure|timed out|servfail)",
    r"malformed (?:or unexpected )?name server reply",
    r"name server timeout",
)

# The sender's own sending limits, worded like a full mailbox's ("quota exceeded"): read first.
_SENDING_LIMITS = (
    r"sending (?:quota|limit)",
    r"daily (?:user )?(?:sending |message )?(?:quota|limit)",
    r"(?:hourly|per hour|per day|per minute) (?:message |sending |receive )?(?:limit|quota)",
    r"message receive limit",
    r"throttling failure",
    r"too many invalid recipients",
    r"submission ?quota",
    r"relay limit exceeded",
    r"receiving mail too quickly",
    r"exceeded (?:their|its|the) limit",
    r"exceeded permitted limits",
    r"threshold exceeded",
)

_MAILBOX_DISABLED = (
    r"account (?:that you tried to reach )?(?:is|has been) (?:disabled|deactivated|suspended|locked|inactive|"
    r"frozen|blocked|closed|expired|discontinued)",
    r"email account that you tried to reach is disabled",
    r"mailbox (?:is |has been )?(?:disabled|deactivated|suspended|locked|inactive|frozen|closed)",
    r"(?:mailbox|account|user) (?:currently |temporarily )?suspended",
    r"(?:is|has been) (?:currently |temporarily )?suspended",
    r"account (?:is )?(?:disabled|deactivated|locked|inactive|expired)",
    r"(?:inactive|disabled|deactivated|suspended|locked|expired) (?:user|account|mailbox|recipient)",
    r"invalid/inactive user",
    r"temporarily inactive",
    r"temporary locked",
    r"mailbox is frozen",
    r"account is locked",
    r"due to extended inactivity",
    r"this mailbox is disabled",
    r"recipient suspend the service",
    r"le compte du destinataire est bloque",  # Orange and La Poste: "The recipient account isblocked."
    r"recipient account is ?blocked",
    r"boite du destinataire archivee",
    r"mailbox (?:cannot be accessed|unavailable or access denied)",
    r"user account (?:is )?(?:disabled|expired)",
    r"account has been (?:disabled|discontinued|terminated)",
)

_USER_UNKNOWN = (
    r"user unknown",
    r"unknown user",
    r"unknown (?:or illegal )?(?:alias|recipient|mailbox|local[- ]part|e-?mail address|address)",
    r"no such (?:user|mailbox|recipient|address|person|account|local user)",
    r"no such user here",
    r"no mailbox (?:here )?by that name",
    r"no mailbox found",
    r"no account by that name",
    r"no (?:valid )?recipients?(?: address)? (?:found|here)",
    r"email account that you tried to reach does not exist",
    r"address couldn't be found",
    r"address (?:does not|doesn't) exist",
    r"(?:user|recipient|mailbox|address|account|e-?mail address|email account|addressee)"
    r" (?:[^ ]{1,200} )?(?:does not|doesn't|did not|does no longer) exist",
    r"(?:user|recipient|mailbox|address|account) (?:[^ ]{1,200} )?(?:not found|unknown|not known|not exist)",
    r"not (?:a )?(?:valid|known) (?:user|recipient|mailbox)",
    r"is not a valid (?:mailbox|user|recipient)",
    r"is not a known user",
    r"invalid (?:recipient|mailbox|address|user|e-?mail address)",
    r"invalid (?:final delivery )?userid",
    r"recipient (?:address )?rejected: (?:access denied|invalid user|invalid-recipient|unknown|user"
    r"|undeliverable)",
    r"recipnotfound",
    r"recipientnotfound",
    r"resolver\.adr\.",
    r"doesn't have a [^ ]{1,60} account",
    r"does not have an? [^ ]{1,60} account",
    r"this address no longer accepts mail",
    r"no longer (?:valid|available|in use|active|exists)",
    r"there is no one at this address",
    r"mailbox not (?:found|present)",
    r"non-?existent (?:user|mailbox|address|recipient)",
    r"not our customer",
    r"destination addresses were unknown",
    r"address (?:not present in directory|unknown)",
    r"bad (?:destination )?(?:mailbox|recipient|address)",
    r"badrcptto",
    r"not listed in (?:domino directory|the public name & address book|public name & address book)",
    r"nessun utente simile",
    r"adresse d au moins un destinataire invalide",
    r"destinataire inconnu",
    r"utilisateur inconnu",
    r"unbekannt",
    r"existiert nicht",
    r"no existe",
    r"has a recent history of bouncing as an invalid address",
    r"mailbox (?:is )?(?:invalid|unknown)",
    r"has been replaced by",
    r"moved (?:with )?no forwarding",
    r"no forwarding address",
    r"mailbox has moved",
    r"n'existe pas",
    r"does not have a final (?:email )?delivery point",
    r"no matches to nameserver query",
    r"did not (?:exactly )?match (?:an?|any) [^ ]{0,40} ?e-?mail address",
    r"recipient name is not recognized",  # Exchange 5.5-2003 and GroupWise ("Unknown Recipient")
)

_DOMAIN_NOT_FOUND = (
    r"host or domain name not found",
    r"no such domain",
    r"domain (?:[^ ]{1,200} )?(?:does not|doesn't) exist",
    r"domain (?:[^ ]{1,200} )?(?:couldn't|could not|can't|cannot) be found",
    r"domain (?:name )?not found",
    r"unknown (?:domain|host)",
    r"host unknown",
    r"domain (?:is )?unknown",
    r"(?:un)?routea?ble (?:address|mail domain|domain)",
    r"unrouteable",
    r"unroutable",
    r"couldn't find any host named",
    r"could not find any host named",
    r"no mx (?:record|or a record)",
    r"mx (?:records? )?(?:point|points) to non-existent hosts",
    r"all relevant mx records point to non-existent hosts",
    r"nonexistentdomain",
    r"nonexistent domain",
    r"dns domain does not exist",
    r"name or service not known",
    r"name service error for name=",
    r"host (?:or domain )?not found",
    r"domain (?:must exist|is not reachable)",
    r"(?:host|domain) (?:/domain )?does not accept mail",
    r"host/domain does not accept mail",
    r"null ?mx\b",
    r"mail domain mentioned in email address is unknown",
    r"does not accept mail \(nullmx\)",
    r"no route for current request",
)

_MAILBOX_FULL = (
    r"mailbox (?:is )?full",
    r"full mailbox",
    r"mailbox (?:[^ ]{1,200} )?(?:has )?exceeded",
    r"(?:inbox|mailbox|mail ?box|mailfolder|mail folder) (?:is )?(?:full|out of (?:storage|space))",
    r"out of storage space",
    r"over (?:the allowed |its |disk |their )?quota",
    r"quota (?:exceeded|violation|full|usage exceeded)",
    r"reached (?:its |the |their )?(?:disk |mailbox |storage )?quota",
    r"disk ?space quota",
    r"disk quota",
    r"overdrawn (?:the |its |their |his |her )?[a-z ]{0,20}quota",
    r"exceed(?:s|ed|ing)? (?:the |its |their |his |her )?(?:mailbox |disk |storage )?quota",
    r"(?:insufficient|not enough) (?:disk |storage )?space",
    r"does not have enough space",
    r"exceeded storage allocation",
    r"disk space limit",
    r"storage (?:limit|quota|allocation) (?:exceeded|reached)",
    r"mailbox size limit exceeded",
    r"mailbox would exceed",
    r"space has been used up",
    r"too many messages (?:on the server|in (?:this|the) mailbox)",
    r"boite du destinataire pleine",
    r"too much mail data",
    r"postfach voll",
    r"speicherplatz",
)

_MESSAGE_TOO_BIG = (
    r"message (?:size |length )?(?:is )?(?:too (?:big|large|long))",
    r"message size (?:exceeds|limit|too)",
    r"message length exceeds",
    r"exceed(?:s|ed)? (?:the |our )?(?:maximum |max )?(?:message |inbound message |allowed )?size",
    r"(?:max|maximum) message size",
    r"size limits?\b",
    r"message file too big",
    r"too large for this",
    r"message header size exceeds",
    r"line limit exceeded",
    r"taille limite du message",
)

_RATE_LIMITED = (
    r"too many",
    r"rate (?:limit|limited|limiting)",
    r"rate[- ]?limited",
    r"receiving mail at a rate",
    r"unusual rate",
    r"(?:sending|send) (?:rate|quota|limit)",
    r"daily (?:user )?(?:sending |message )?(?:quota|limit)",
    r"(?:hourly|daily|per hour|per day) (?:message |sending )?(?:limit|quota)",
    r"message receive limit",
    r"throttl",
    r"connection limit",
    r"max(?:imum)? (?:number of )?(?:connections|messages|recipients)",
    r"max emails per hour",
    r"exceeded the max",
    r"mail flood",
    r"slow down",
    r"server busy",
    r"greylist",
    r"graylist",
    r"trop de connexions",
)

_SPAM = (
    r"spam\b",
    r"spamming",
    r"unsolicited",
    r"bulk (?:mail|e-?mail|advertising)",
    r"junk (?:mail|e-?mail)",
    r"virus",
    r"malware",
    r"infected",
    r"phishing",
    r"malicious",
    r"suspicious (?:attachment|content|link|url)",
    r"potential security issue",
    r"(?:dangerous|prohibited|banned|illegal|blocked|executable|forbidden) (?:attachment|content|file)",
    r"attachment (?:extension|type)s? (?:is |are )?(?:forbidden|not allowed|blocked|prohibited)",
    r"content (?:filter|rejected|rejection|denied)",
    r"message content",
    r"rejecting (?:banned|mail) content",
    r"(?:looks|look|looked) like spam",
    r"high probability of",
    r"spamassassin",
    r"url in message",
    r"mail rejete",
    r"ofr_506\b",
)

_EXPIRED = (
    r"message expired",
    r"envelope expired",  # OpenSMTPD
    r"delivery time expired",
    r"retry time(?:out)? (?:not reached|exceeded)",
    r"retry timeout exceeded",
    r"(?:in|sitting in) (?:the )?queue (?:too long|for)",
    r"queue too long",
    r"could not be delivered for more than",
    r"was not reachable within the allowed queue period",
    r"have been failing for a long time",
    r"will be retried",
    r"delivery failed \d+ attempts",
    r"(?:failed|unsuccessful) (?:after )?\d+ (?:delivery )?attempts",
    r"cannot send message for",
    r"could not be delivered within",
    r"unable to deliver (?:the )?message after multiple retries",
    r"message timed out",
    r"expired after",
    r"it has not been collected after",
    r"could not find a gateway for",
    r"delivery attempts will continue",
    r"has been delayed",
    r"delivery (?:is )?delayed",
    r"message delayed",
    r"not yet been delivered",
    r"could not be delivered yet",
)

_NETWORK = (
    r"connection (?:was )?(?:timed out|refused|reset|dropped|closed|lost)",
    r"connect(?:ion)? (?:to [^ ]{1,200} )?(?:failed|timed out|refused)",
    r"connection to (?:the )?mail exchanger failed",  # Exim, GMX and 1&1
    r"timed out",
    r"timeout",
    r"no route to host",
    r"(?:host|network) (?:is )?unreachable",
    r"unable to connect",
    r"could not connect",
    r"couldn't connect",
    r"establish an smtp connection",
    r"lost connection",
    r"read error",
    r"write error",
    r"broken pipe",
    r"tls (?:handshake|negotiation)",
    r"ssl (?:handshake|error)",
    r"certificate",
    r"routing loop",
    r"smtp protocol",
    r"could not be contacted",
    r"server did not respond",
    r"no answer",
)

_POLICY = (
    r"policy",
    r"(?:is|are) not accepting (?:any )?mail",
    r"not accepting mail at this time",
    r"not (?:authorized|permitted|allowed|accepted)",
    r"administrative prohibition",
    r"prohibited",
    r"restricted",
    r"access denied",
    r"denied\b",
    r"refused",
    r"only accepting mail from",
    r"not on the (?:allowed|approved) list",
    r"members-only list",
    r"closed mailing list",
    r"user reject",
    r"user rules",
    r"recipient preferences",
    r"blocked by the recipient",
    r"organization(?:al)? (?:settings|policy)",
    r"encryption (?:needed|required)",
    r"starttls",
    r"tls required",
    r"not in whitelist",
    r"over ipv6",
    r"requiretls",
    r"suppression list",
    r"previously bounced",
    r"bounced address",
    r"spam reporting address",
    r"rst\.notauthorized",
)

# The barest words of refusal, tried last of all.
_BLOCKED_BARE = (r"block(?:ed|s|ing)?\b",)
_REJECTED_BARE = (r"reject(?:ed|s|ing)?\b",)

# A local delivery program that failed ("Command output: ..."): the receiving system's trouble, whatever
# network words its own error message carries. Read before the network table.
_MAILER_ERROR = (
    r"command died",
    r"command output",
    r"mailer error",
)

_SYSTEM = (
    r"mail (?:forwarding )?loop",
    r"loops back to myself",
    r"message looping",
    r"system (?:error|config|failure|problem)",
    r"internal (?:server )?error",
    r"local (?:error|configuration error|problem)",
    r"temporary (?:local )?(?:problem|failure|error)",
    r"configuration error",
    r"misconfigured",
    r"service (?:currently )?(?:unavailable|not available)",
    r"resources? (?:temporarily )?unavailable",
    r"insufficient system (?:storage|resources)",
    r"system (?:is )?(?:full|busy|overloaded)",
    r"queue file write error",
    r"can't create (?:user )?output file",
    r"mailbox (?:temporarily )?unavailable",
    r"mail system (?:full|unavailable)",
    r"transaction failed",
    r"incorrectly configured",
    r"not accepting network messages",
    r"storedrv",
    r"failed to be replicated",
    r"server error",
    r"list expansion problem",
    r"temporarily not available",
    r"not unique\. several matches found",
    r"processing error",
    r"interrupted system call",
    r"encountered an error while being processed",  # USA.NET's notice
)

# Loose wording many servers use for an unknown address, also used for other refusals: it stands only when
# nothing more specific matched.
_USER_UNKNOWN_LOOSE = (
    r"mailbox unavailable",
    r"recipient (?:address )?rejected",
    r"(?:address|recipient) (?:is )?not (?:valid|available|local)",
    r"undeliverable address",
    r"unable to deliver to",
)


def _compile(phrases: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in phrases))


# (reason, as the value of deadpixel.bounces.reasons.Reason; its table). First match wins; see the module
# docstring for why this order.
TIERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("authentication failure", _compile(_AUTHENTICATION)),
    ("blocked", _compile(_BLOCKED)),
    ("policy", _compile(_SENDER_ADDRESS)),
    ("network", _compile(_DNS_TROUBLE)),
    ("rate limited", _compile(_SENDING_LIMITS)),
    ("mailbox disabled", _compile(_MAILBOX_DISABLED)),
    ("mailbox full", _compile(_MAILBOX_FULL)),
    ("domain not found", _compile(_DOMAIN_NOT_FOUND)),
    ("user unknown", _compile(_USER_UNKNOWN)),
    ("message too big", _compile(_MESSAGE_TOO_BIG)),
    ("spam/content", _compile(_SPAM)),
    ("rate limited", _compile(_RATE_LIMITED)),
    ("system", _compile(_MAILER_ERROR)),
    ("expired", _compile(_EXPIRED)),
    ("network", _compile(_NETWORK)),
    ("policy", _compile(_POLICY)),
    ("user unknown", _compile(_USER_UNKNOWN_LOOSE)),
    ("system", _compile(_SYSTEM)),
    ("blocked", _compile(_BLOCKED_BARE)),
    ("policy", _compile(_REJECTED_BARE)),
)


GAVE_UP = _compile(_EXPIRED)


def says_it_gave_up(normalised: str) -> bool:
    """Does the text say the sending side stopped retrying (or is still retrying, late), whatever else made
    the attempts fail?"""
    return GAVE_UP.search(normalised) is not None


def reason_in_text(normalised: str) -> str | None:
    """The reason (a ``Reason`` value) the first matching table gives, or None when no phrase matches."""
    for reason, pattern in TIERS:
        if pattern.search(normalised):
            return reason
    return None
