"""Mail client, device and OS from a user agent, plus what the user agent alone says about machines.

ua-parser (uap-core rules) knows browsers, operating systems and devices, and flags many bots. It does not
know most mail clients, and it calls every bare WebKit UA "Apple Mail", so mail clients are recognised here
first, by the tokens they put in their user agents and by the shapes of the web views they render mail in.
Rules are structural where possible (a product token containing "mail", the tail after a web view's engine
tokens, a program token with no platform) so that clients that are in no list still come out right.

Parses are cached: a few hundred distinct strings cover most traffic. Input is cut to ``MAX_LENGTH`` first, so
garbage of any size costs the same as a real user agent.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from urllib.parse import unquote

import ua_parser

MAX_LENGTH = 1024
MAX_NAME = 60
DEVICES = ("desktop", "mobile", "tablet", "unknown")
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ClientInfo:
    client: str  # "Apple Mail", "Outlook", "Gmail", "Webmail (Chrome)", ... or "unknown"
    device: str  # one of DEVICES
    os: str  # "iOS", "macOS", "Windows", "Android", "Linux", ... or "unknown"
    guessed: bool = False  # the UA shape is shared by other apps (bare WebKit, bare Android WebView)


@dataclass(frozen=True, slots=True)
class MachineSignal:
    """What the user agent alone proves: a proxy, a prefetch or a scanner, with the reason and rule id."""

    kind: str
    reason: str
    rule: str


@dataclass(frozen=True, slots=True)
class UserAgentFacts:
    info: ClientInfo
    machine: MachineSignal | None
    browser: bool  # a general-purpose browser, so webmail or anything else a person reads in a browser
    obsolete: bool  # a browser many years out of date: normal for scanners, odd for people


NO_CLIENT = ClientInfo(UNKNOWN, UNKNOWN, UNKNOWN)

# --- machines the user agent names --------------------------------------------------------------------------

_PROXIES: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(pattern, re.I), client, label)
    for pattern, client, label in (
        (r"GoogleImageProxy", "Gmail", "Gmail image proxy"),
        (r"YahooMailProxy", "Yahoo Mail", "Yahoo Mail image proxy"),
        (r"FastmailUA", "Fastmail", "Fastmail image proxy"),
        (r"SeznamEmailProxy", "Seznam Email", "Seznam.cz webmail image proxy"),
        (r"secureurl\.fwdcdn\.com", "ukr.net Mail", "ukr.net webmail image proxy"),
        (r"RamblerMail", "Rambler Mail", "Rambler webmail image proxy"),
        # Structural: providers name fetchers "<Brand>(E)MailProxy" / "...ImageProxy" or say "via ... proxy".
        (r"[a-z]*(?:e?mail|image)[ _-]?proxy", "Webmail proxy", "a webmail image proxy"),
        (r"\(via [^)]*proxy", "Webmail proxy", "a webmail image proxy"),
    )
)

_PROXY_HINTS = ("proxy", "fastmailua", "fwdcdn", "ramblermail")
_SCANNER_TOKENS: tuple[tuple[str, str], ...] = (
    # (lower-case substring, name shown as the client)
    ("microsoft office existence discovery", "Microsoft Office"),
    ("protocol discovery", "Microsoft Office"),
    ("microsoft data access", "Microsoft Office"),
    ("yahoo link preview", "Yahoo Mail"),
    ("barracuda", "Barracuda"),
    ("proofpoint", "Proofpoint"),
    ("mimecast", "Mimecast"),
    ("ironport", "Cisco Secure Email"),
    ("messagelabs", "Broadcom MessageLabs"),
    ("trendmicro", "Trend Micro"),
    ("google-safety", "Google Safety"),
    ("virustotal", "VirusTotal"),
    ("microsoftpreview", "Microsoft Preview"),
    ("skypeuripreview", "Skype preview"),
    ("facebookexternalhit", "Facebook preview"),
    ("whatsapp", "WhatsApp preview"),
    ("headlesschrome", "Headless Chrome"),
    ("puppeteer", "Puppeteer"),
    ("playwright", "Playwright"),
    ("phantomjs", "PhantomJS"),
    ("selenium", "Selenium"),
    ("webdriver", "WebDriver"),
    ("python-requests", "python-requests"),
    ("python-urllib", "Python urllib"),
    ("python/", "Python"),
    ("aiohttp", "aiohttp"),
    ("httpx", "httpx"),
    ("curl/", "curl"),
    ("wget", "Wget"),
    ("go-http-client", "Go http client"),
    ("okhttp", "OkHttp"),
    ("java/", "Java"),
    ("apache-httpclient", "Apache HttpClient"),
    ("libwww-perl", "libwww-perl"),
    ("lwp::", "libwww-perl"),
    ("node-fetch", "node-fetch"),
    ("axios/", "axios"),
    ("undici", "undici"),
    ("guzzlehttp", "Guzzle"),
    ("scrapy", "Scrapy"),
    ("postmanruntime", "Postman"),
    ("powershell", "PowerShell"),
    ("winhttp", "WinHTTP"),
    ("link preview", "Link preview"),
    ("linkpreview", "Link preview"),
    ("link checker", "Link checker"),
    ("linkcheck", "Link checker"),
    ("validator", "Validator"),
    ("urlscan", "urlscan"),
    ("safebrowsing", "Safe Browsing"),
)
# Bots describe themselves: "...bot/1.0", "robot", "crawler", "spider", a contact URL or e-mail address. "bot"
# only counts before '/' or '-' or as a word, so device names such as "CUBOT P30" stay people.
_BOT_WORDS = re.compile(r"bot[/\-_]|\bbot\b|robot|crawl|spider|scanner|\bscan/|fetcher|monitor", re.I)
_BOT_HINTS = ("bot", "crawl", "spider", "scan", "fetcher", "monitor")
_CONTACT_HINTS = ("http", "www.", "@")
_CONTACT = re.compile(r"https?://|\bwww\.[a-z0-9-]+\.[a-z]|[\w.+-]{1,64}@[\w-]{1,63}\.[\w.]{2,16}", re.I)
# "(compatible; X" is how IE and Office introduced themselves; anything else using it is a self-declared bot.
_COMPATIBLE = re.compile(r"\(compatible;\s*([^;)]*)", re.I)
_COMPATIBLE_PEOPLE = (
    "msie",
    "konqueror",
    "ms-office",
    "msoffice",
    "microsoft outlook",
    "lotus-notes",
    "windows",
)
_BARE_PROGRAM = re.compile(r"^[\w.%+-]+(?:/[\w.+-]*)?$")

# --- mail clients -------------------------------------------------------------------------------------------

# (cheap lower-case keywords, pattern, client): the pattern runs only when a keyword is in the user agent, so
# a user agent that names no mail client costs forty substring tests, not forty regex scans.
_MAIL_CLIENT_RULES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("outlook",), r"\bOutlook-(?:iOS|Android)/|\bMacOutlook/|\bOneOutlook/", "Outlook"),
    (("outlook",), r"Microsoft (?:Office )?Outlook|\bOutlook[- ]Express|\bOutlook/\d", "Outlook"),
    (("live mail",), r"Windows Live Mail", "Windows Live Mail"),
    (("windowsmail",), r"\bWindowsMail/", "Windows Mail"),
    (("the bat!",), r"^The Bat!", "The Bat!"),
    (("thunderbird", "icedove"), r"\b(?:Thunderbird|Icedove)/", "Thunderbird"),
    (("betterbird",), r"\bBetterbird/", "Betterbird"),
    (
        ("gmail", "android-mail", "android.gm"),
        r"\bAndroid-(?:Gmail|Mail)/|\bGmail/|com\.google\.android\.gm\b",
        "Gmail",
    ),
    (
        ("yahoo", "ymail"),
        r"\bYahoo(?:%20| )?(?:Mobile)?(?:%20| )?Mail\b|\bYahooMobile\b.*\bmail\b|\bYMail",
        "Yahoo Mail",
    ),
    (("samsung",), r"\bSamsung(?:%20| )?E-?mail|com\.samsung\.android\.email", "Samsung Email"),
    (("client",), r"\beM ?Client\b", "eM Client"),
    (("postbox",), r"\bPostbox\b", "Postbox"),
    (("mailspring",), r"\bMailspring/", "Mailspring"),
    (("mailbird",), r"\bMailbird\b", "Mailbird"),
    (("foxmail",), r"\bFoxmail/", "Foxmail"),
    (("airmail",), r"^Airmail\b|\bAirmail/", "Airmail"),
    (("canary",), r"\bCanary(?:%20| )?Mail\b", "Canary Mail"),
    (("mailmaster",), r"\bMailMaster", "NetEase Mail Master"),
    (("mailapp/",), r"\bmailapp/", "MailApp"),
    (("polymail",), r"\bPolymail/", "Polymail"),
    (("bluemail",), r"\bBlueMail\b", "BlueMail"),
    (("kmail",), r"\bKMail\b", "KMail"),
    (("evolution",), r"\bEvolution/", "Evolution"),
    (("claws",), r"\bClaws[ -]?Mail\b", "Claws Mail"),
    (("sylpheed",), r"\bSylpheed\b", "Sylpheed"),
    (("notes",), r"\bLotus[ -]Notes\b|\b(?:IBM|HCL) Notes\b", "Lotus Notes"),
    (("superhuman",), r"\bSuperhuman\b", "Superhuman"),
    (("mimestream",), r"\bMimestream/", "Mimestream"),
    (("mailmate",), r"\bMailMate/", "MailMate"),
    (("edison",), r"\bEdison(?:Mail)?/", "Edison Mail"),
    (("proton",), r"\bProton ?Mail\b", "Proton Mail"),
    (("tuta",), r"\bTutanota\b|\bTuta/", "Tuta"),
    (("zoho",), r"\bZoho ?Mail\b", "Zoho Mail"),
    (("aqua",), r"\bAqua ?Mail\b", "Aqua Mail"),
    (("k-9", "k9"), r"\bK-?9 ?Mail\b", "K-9 Mail"),
    (("fairemail",), r"\bFairEmail\b", "FairEmail"),
    (("naver",), r"NAVER\(inapp;[^)]*mail|\bNaverMail", "Naver Mail"),
    (("qqmail",), r"\bQQMail\b", "QQ Mail"),
    (("yandex",), r"\bYandex\.?Mail\b", "Yandex Mail"),
    (("mail.ru", "mailru"), r"\bMail\.Ru\b|\bMailRu", "Mail.ru"),
)
_MAIL_HINTS = tuple(key for keys, _, _ in _MAIL_CLIENT_RULES for key in keys)
_MAIL_CLIENTS = tuple(
    (keys, re.compile(pattern, re.I), client) for keys, pattern, client in _MAIL_CLIENT_RULES
)
# Structural: any product token whose name says mail ("SomeMail/2.1", "Mail%20App/3").
_MAIL_TOKEN = re.compile(r"(?:^|[\s;(\[])((?:[A-Za-z][\w.%-]{0,40})?mail[\w.%-]{0,40})/\d", re.I)
# A native Apple-platform app: "<App>/<build> CFNetwork/<v> Darwin/<v>" ("(x86_64)" or "(arm64)" on macOS).
_CFNETWORK = re.compile(r"^([^/]{1,60})/\S* CFNetwork/\S+ Darwin/\S+( \((?:x86_64|arm64|i386)\))?")
_CFNETWORK_APPS = {"mail": "Apple Mail", "mobilemail": "Apple Mail", "outlook": "Outlook"}

# Web views that render mail. What follows the engine tokens names the app; nothing following means the
# platform's own mail app (Apple) or, on Android, a mail app that adds no token (Outlook, by public evidence).
_MAC_WEBKIT = re.compile(r"^Mozilla/5\.0 \(Macintosh;[^)]*\) AppleWebKit/[\d.+]+ \(KHTML, like Gecko\)(.*)$")
_IOS_WEBKIT = re.compile(
    r"^Mozilla/5\.0 \((?:iPhone|iPad|iPod)[^)]*\) AppleWebKit/[\d.+]+ \(KHTML, like Gecko\)(.*)$"
)
_ANDROID_WEBVIEW = re.compile(
    r"^Mozilla/5\.0 \(Linux;[^)]*Android[^)]*\) AppleWebKit/[\d.+]+ \(KHTML, like Gecko\) "
    r"Version/[\d.]+ Chrome/[\d.]+ (?:Mobile )?Safari/[\d.]+(.*)$"
)
_BROWSER_TAIL = re.compile(r"\b(?:Version|Safari|Chrome|CriOS|FxiOS|EdgiOS|OPiOS|OPT|YaBrowser|Brave)/")
_APP_TOKEN = re.compile(r"([A-Za-z][\w.-]*)[/ ]\d")
_ENGINE_TOKENS = frozenset({"Chrome", "Safari", "Electron", "Version", "Mobile", "Edg", "Edge"})
# The Windows 10/11 Mail app renders mail in a UWP web view (EdgeHTML): "; WebView/3.0)" ... "Edge/18".
_UWP_WEBVIEW = re.compile(r"Windows NT [^)]*; WebView/[\d.]+\).*\bEdge/\d")
_IN_APP_NAMES = {
    "fban": "Facebook",
    "fbav": "Facebook",
    "fb_iab": "Facebook",
    "instagram": "Instagram",
    "gsa": "Google app",
    "line": "LINE",
    "micromessenger": "WeChat",
    "kakaotalk": "KakaoTalk",
}

# --- browsers -----------------------------------------------------------------------------------------------

_BROWSERS = {
    "Chrome": "Chrome",
    "Chrome Mobile": "Chrome",
    "Chrome Mobile iOS": "Chrome",
    "Chromium": "Chromium",
    "Firefox": "Firefox",
    "Firefox Mobile": "Firefox",
    "Firefox iOS": "Firefox",
    "Safari": "Safari",
    "Mobile Safari": "Safari",
    "Edge": "Edge",
    "Edge Mobile": "Edge",
    "Opera": "Opera",
    "Opera Mobile": "Opera",
    "Opera Mini": "Opera",
    "IE": "Internet Explorer",
    "IE Mobile": "Internet Explorer",
    "Samsung Internet": "Samsung Internet",
    "Yandex Browser": "Yandex Browser",
    "Vivaldi": "Vivaldi",
    "Brave": "Brave",
    "UC Browser": "UC Browser",
    "QQ Browser": "QQ Browser",
    "Amazon Silk": "Silk",
    "Whale": "Whale",
    "MiuiBrowser": "MIUI Browser",
    "SeaMonkey": "SeaMonkey",
    "Pale Moon": "Pale Moon",
    "Waterfox": "Waterfox",
    "DuckDuckGo Mobile": "DuckDuckGo",
}
_OBSOLETE_MAJOR = {"Internet Explorer": 8, "Firefox": 19, "Chrome": 59, "Opera": 12}

_OFFICE_APP = re.compile(
    r"^Microsoft Office/.*\bMicrosoft (?:Word|Excel|PowerPoint|OneNote|Access|Publisher|Visio|Project"
    r"|Lync|InfoPath|OneDrive|Skype|Teams)\b"
)
_OS_HINTS = ((re.compile(r"\bOutlook-iOS/"), "iOS"), (re.compile(r"\bOutlook-Android/|^Android-"), "Android"))

_OS_NAMES = {
    "Mac OS X": "macOS",
    "iOS": "iOS",
    "Windows": "Windows",
    "Android": "Android",
    "Chrome OS": "ChromeOS",
    "Windows Phone": "Windows Phone",
}
_LINUXES = frozenset(
    {"Linux", "Ubuntu", "Kubuntu", "Xubuntu", "Debian", "Fedora", "Red Hat", "SUSE", "openSUSE", "Mint"}
    | {"Linux Mint", "Arch Linux", "Gentoo", "CentOS", "Mandriva", "Slackware"}
)
_WINDOWS_NT = re.compile(r"Windows NT (\d+)\.(\d+)")
_CHROME_MAJOR = re.compile(r"\bChrome/(\d+)")
_FIREFOX_MAJOR = re.compile(r"\bFirefox/(\d+)")
_IE = re.compile(r"\bMSIE (\d+)|\bTrident/")


def _program_name(text: str) -> str:
    token = unquote(text.split("/", 1)[0]).strip()
    return token[:60] or UNKNOWN


def _named_machine(text: str, low: str) -> tuple[str, MachineSignal] | None:
    """Proxies, prefetch fingerprints and scanners that the user agent names outright."""
    if text == "Mozilla/5.0":
        reason = "user agent is exactly 'Mozilla/5.0' (Apple Mail Privacy Protection)"
        return "Apple Mail", MachineSignal("prefetch", reason, "ua-apple-mpp")
    if "edge/12.246" in low:
        reason = "user agent is the Gmail prefetch bot's (Chrome/42 with Edge/12.246)"
        return "Gmail", MachineSignal("prefetch", reason, "ua-gmail-prefetch")
    for pattern, client, label in _PROXIES if any(hint in low for hint in _PROXY_HINTS) else ():
        match = pattern.search(text)
        if match:
            if client == "Webmail proxy":
                client = match.group(0).strip("( ")[:40]
            return client, MachineSignal("proxy", f"user agent names {label} ({match.group(0)})", "ua-proxy")
    for token, client in _SCANNER_TOKENS:
        if token in low:
            reason = f"user agent names a scanner or bot ({client})"
            return client, MachineSignal("scanner", reason, "ua-scanner-token")
    return None


def _mail_client(text: str) -> tuple[str, bool] | None:
    """(client, guessed) for a recognised mail client or the app of a web view, else None."""
    low = text.lower()
    for keys, pattern, client in _MAIL_CLIENTS if any(key in low for key in _MAIL_HINTS) else ():
        if any(key in low for key in keys) and pattern.search(text):
            return client, False
    if "office" in low and re.search(r"\bms-office\b|\bMSOffice\b|^Microsoft Office/", text, re.I):
        other_app = _OFFICE_APP.search(text)
        return ("Microsoft Office", False) if other_app else ("Outlook", not re.search("Outlook", text))
    cfnetwork = _CFNETWORK.match(text)
    if cfnetwork:
        name = _program_name(cfnetwork.group(1))
        return _CFNETWORK_APPS.get(name.lower(), name), False
    token = _MAIL_TOKEN.search(text) if "mail" in low else None
    if token:
        return _program_name(token.group(1)), False
    for pattern, platform_app in (
        (_MAC_WEBKIT, "Apple Mail"),
        (_IOS_WEBKIT, "Apple Mail"),
        (_ANDROID_WEBVIEW, "Outlook"),
    ):
        web_view = pattern.match(text)
        app = (
            _web_view_app(re.sub(r"\bMobile/\w+", "", web_view.group(1)), platform_app) if web_view else None
        )
        if app is not None:
            return app
    if "Electron/" in text:  # desktop apps built on Electron name themselves next to the Chrome token
        names = [t for t in _APP_TOKEN.findall(text.partition("Gecko)")[2]) if t not in _ENGINE_TOKENS]
        return (names[0], False) if names else None
    if _UWP_WEBVIEW.search(text):
        return "Windows Mail", True
    return None


def _web_view_app(tail: str, platform_app: str) -> tuple[str, bool] | None:
    tail = tail.strip()
    if not tail:
        return platform_app, True
    for token, name in _IN_APP_NAMES.items():
        if re.search(rf"\b{token}\b", tail, re.I):
            return name, False
    if _BROWSER_TAIL.search(tail):
        return None  # a browser: Safari, Chrome for iOS, ...
    app_token = _APP_TOKEN.search(tail)
    if app_token is None:
        return platform_app, True
    return app_token.group(1), False


def _impossible_platform(text: str) -> str | None:
    """Engine and OS combinations no real install produces: spoofed scanner user agents."""
    ie = _IE.search(text)
    if ie and "Windows" not in text:
        return "Internet Explorer on a system other than Windows"
    nt = _WINDOWS_NT.search(text)
    if nt is None:
        return None
    version = (int(nt.group(1)), int(nt.group(2)))
    chrome = _CHROME_MAJOR.search(text)
    firefox = _FIREFOX_MAJOR.search(text)
    if chrome and version < (6, 1) and int(chrome.group(1)) >= 50:
        return f"Chrome {chrome.group(1)} on Windows XP/Vista (support ended with Chrome 49)"
    if chrome and version < (10, 0) and int(chrome.group(1)) >= 110:
        return f"Chrome {chrome.group(1)} on Windows 7/8 (support ended with Chrome 109)"
    if firefox and version < (6, 1) and int(firefox.group(1)) >= 53:
        return f"Firefox {firefox.group(1)} on Windows XP/Vista (support ended with Firefox 52)"
    if firefox and version < (10, 0) and int(firefox.group(1)) >= 116:
        return f"Firefox {firefox.group(1)} on Windows 7/8 (support ended with Firefox 115)"
    if ie and ie.group(1) and int(ie.group(1)) < 7 and version >= (6, 0):
        return f"Internet Explorer {ie.group(1)} on Windows Vista or later"
    return None


def _os_and_device(text: str, result: ua_parser.Result, client: str) -> tuple[str, str]:
    family = result.os.family if result.os else "Other"
    os_name = _OS_NAMES.get(family) or ("Linux" if family in _LINUXES else family)
    if os_name == "Other":
        os_name = UNKNOWN
    if client == "Outlook" and os_name == UNKNOWN and re.search(r"Microsoft (?:Office|Outlook)", text):
        os_name = "Windows"  # Outlook for Mac says MacOutlook or Macintosh; the bare Office token is Windows
    for hint, name in _OS_HINTS:
        if hint.search(text):
            os_name = name
    cfnetwork = _CFNETWORK.match(text)
    if cfnetwork:  # native Apple app: macOS adds the CPU architecture, iOS does not
        os_name = "macOS" if cfnetwork.group(2) else "iOS"
    if os_name == "iOS":
        if re.search(r"iPad|\.ipad\b", text, re.I):
            return os_name, "tablet"
        return os_name, "mobile" if re.search(r"iPhone|iPod|\.iphone\b", text, re.I) else UNKNOWN
    if os_name == "Android":
        if re.search(r"\bMobile\b", text):
            return os_name, "mobile"
        return os_name, "tablet" if re.search(r"\(Linux;[^)]*Android", text) else UNKNOWN
    if os_name == "Windows Phone":
        return os_name, "mobile"
    if os_name in ("Windows", "macOS", "Linux", "ChromeOS") or "BSD" in os_name:
        return os_name, "desktop"
    return os_name, UNKNOWN


def _browser(result: ua_parser.Result) -> tuple[str, bool] | None:
    """(browser name, obsolete) when ua-parser recognises a general-purpose browser."""
    if result.user_agent is None:
        return None
    name = _BROWSERS.get(result.user_agent.family)
    if name is None:
        return None
    major = result.user_agent.major
    limit = _OBSOLETE_MAJOR.get(name)
    obsolete = bool(limit and major and major.isdigit() and int(major) <= limit)
    return name, obsolete


def _facts(text: str) -> UserAgentFacts:
    low = text.lower()
    named = _named_machine(text, low)
    if named is not None:
        client, signal = named
        return UserAgentFacts(ClientInfo(client, UNKNOWN, UNKNOWN), signal, browser=False, obsolete=False)
    result = ua_parser.parse(text)
    mail = _mail_client(text)
    if mail is not None:
        client, guessed = mail
        os_name, device = _os_and_device(text, result, client)
        return UserAgentFacts(
            ClientInfo(client, device, os_name, guessed), None, browser=False, obsolete=False
        )
    family = result.user_agent.family if result.user_agent else "Other"
    machine: MachineSignal | None = None
    if result.device is not None and result.device.family == "Spider":
        machine = MachineSignal("scanner", f"user agent is a known bot ({family})", "ua-bot")
    elif (any(k in low for k in _BOT_HINTS) and _BOT_WORDS.search(text)) or (
        any(k in low for k in _CONTACT_HINTS) and _CONTACT.search(text)
    ):
        machine = MachineSignal(
            "scanner", "user agent describes a bot (bot name or contact address)", "ua-bot"
        )
    elif (compatible := _COMPATIBLE.search(text)) and not compatible.group(1).lower().startswith(
        _COMPATIBLE_PEOPLE
    ):
        reason = f"user agent is a self-declared 'compatible' agent ({compatible.group(1).strip()[:40]})"
        machine = MachineSignal("scanner", reason, "ua-bot")
    elif (impossible := _impossible_platform(text)) is not None:
        machine = MachineSignal("scanner", f"impossible platform: {impossible}", "ua-impossible")
    elif _BARE_PROGRAM.match(text):
        reason = f"user agent is a bare program name ({_program_name(text)}), not a mail client or browser"
        machine = MachineSignal("scanner", reason, "ua-program")
    if machine is not None:
        name = family if family != "Other" else _program_name(text)
        return UserAgentFacts(ClientInfo(name, UNKNOWN, UNKNOWN), machine, browser=False, obsolete=False)
    browser = _browser(result)
    os_name, device = _os_and_device(text, result, UNKNOWN)
    if browser is not None:
        name, obsolete = browser
        return UserAgentFacts(ClientInfo(f"Webmail ({name})", device, os_name), None, True, obsolete)
    return UserAgentFacts(ClientInfo(UNKNOWN, device, os_name), None, browser=False, obsolete=False)


def _clean(text: str, limit: int) -> str:
    """Names and reasons quote the user agent: keep them printable (no NUL for PostgreSQL) and short."""
    return "".join(ch for ch in text if ch.isprintable())[:limit].strip()


def warm_up() -> None:
    """Build the user-agent library's parser now: built on first use, it would hold up the first batch of
    opens (or the first chunk of a spool replay) for a good tenth of a second."""
    ua_parser.parse("Mozilla/5.0")


@functools.lru_cache(maxsize=8192)
def _cached_facts(text: str) -> UserAgentFacts:
    facts = _facts(text)
    client = _clean(facts.info.client, MAX_NAME) or UNKNOWN
    machine = facts.machine
    if machine is not None:
        machine = MachineSignal(machine.kind, _clean(machine.reason, 300), machine.rule)
    if client != facts.info.client or machine != facts.machine:
        facts = dataclasses.replace(
            facts, info=dataclasses.replace(facts.info, client=client), machine=machine
        )
    return facts


def analyse_user_agent(user_agent: str | None) -> UserAgentFacts:
    """Everything the user agent alone tells: client, device, OS and any machine signal."""
    text = (user_agent or "")[:MAX_LENGTH].strip()
    if not text:
        return UserAgentFacts(
            NO_CLIENT, MachineSignal("scanner", "no user agent", "ua-missing"), False, False
        )
    return _cached_facts(text)


def parse_user_agent(user_agent: str | None) -> ClientInfo:
    """Mail client, device and OS. A machine gets its own name and no device or OS: they are no reader's."""
    return analyse_user_agent(user_agent).info
