"""The seed guide, section by section, against the knowledge base and the parser (issue 9).

- Every workaround the guide gives (commands and terms read from the guide by
  ``tests/seed_guide.py``) is in the ``recommended_actions`` of every cause whose rules
  cover its section in ``seed_sections``.
- A few workarounds are prose only (the guide gives no command for them): each is named
  here by a phrase of its section, checked against the guide, and by what the actions say.
- Every message line of the guide's examples parses to a kind.

The tests that read the guide itself are skipped when ``shared/seed`` is not next to the
repository; the others read ``tests/data/seed_workarounds.json``, which the first test
keeps equal to the guide.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import seed_guide

from streams.core.event import Event
from streams.core.framing import iter_records
from streams.core.kb import default_kb
from streams.core.parse import Parser

KB = default_kb()
SEED = seed_guide.seed_text()
needs_seed = pytest.mark.skipif(SEED is None, reason="shared/seed is not next to the repository")

# Workarounds the guide states in prose only: (section, phrase of the section, what the
# actions of one of the section's causes must say).
PROSE: list[tuple[str, str, str]] = [
    ("Replay Check Failed", "désactivez esp-md5-hmac", r"esp-md5-hmac"),
    ("Replay Check Failed", "CSCdp19680", r"CSCdp19680"),
    ("QM FSM Error", "ACL de chiffrement correspondent", r"mirror"),
    ("QM FSM Error", "même jeu de transformations", r"transform set"),
    ("Invalid Local Address", "pas appliquée à la bonne interface", r"Apply the crypto map"),
    (
        "IKE Message from X.X.X.X Failed its Sanity Check or is Malformed",
        "vérifiez les clés pré-partagées des deux côtés",
        r"pre-shared keys on both peers",
    ),
    ("Processing of Main Mode Failed with Peer", "tous les attributs correspondent", r"all match"),
    ("Proxy Identities Not Supported", "doivent se refléter", r"mirror"),
    ("Transform Proposal Not Supported", "jeu de transformations", r"transform set"),
    (
        "No Cert and No Keys with Remote Peer",
        "qu'elle peut être atteinte",
        r"reachable",
    ),
    ("Peer Address X.X.X.X Not Found", "en premier", r"host-specific entry first"),
    ("IPsec Packet has Invalid SPI", "contacter l'administrateur", r"peer's administrator"),
    ("IPSEC(initialize_sas): Invalid Proxy IDs", "ne correspond pas", r"mirror"),
    ("Reserved Not Zero on Payload 5", "nouvelle saisie", r"enter them again"),
    ("Hash Algorithm Offered does not Match Policy", "stratégie par défaut 65535", r"65535"),
    ("HMAC Verification Failed", "l'accélérateur de chiffrement", r"accelerator"),
    ("Remote Peer Not Responding", "jeux de transformation", r"transform set"),
    (
        "Toutes les propositions d'IPSec SA fondent inacceptable",
        "jeu de transformations",
        r"transform set",
    ),
    ("Error Trying to Establish VPN Tunnel on 7600 Series Router", "IPSEC-SPA", r"IPSEC-SPA"),
    (
        "Absence de flux de trafic une fois le tunnel établi : impossible d'effectuer un test "
        "Ping à l'intérieur du réseau derrière PIX",
        "une route pour les réseaux qui se trouvent à l'intérieur",
        r"route inside",
    ),
    (
        "Absence de flux de trafic une fois le tunnel établi : impossible d'effectuer un test "
        "Ping à l'intérieur du réseau derrière PIX",
        "route de retour au PIX pour les adresses du pool",
        r"route back to the PIX for the addresses of the VPN client pool",
    ),
    (
        "Une fois le tunnel activé, certaines applications ne fonctionnent pas : réglage MTU "
        "au niveau du client",
        "Set MTU",
        r"Set MTU utility",
    ),
    (
        "Une fois le tunnel activé, certaines applications ne fonctionnent pas : réglage MTU "
        "au niveau du client",
        "case d'option **576**",
        r"576",
    ),
    (
        "Vérification des listes de contrôle d'accès (ACL)",
        "ne se superposent pas",
        r"do not overlap",
    ),
    ("Vérification des listes de contrôle d'accès (ACL)", "**route-map**", r"route-map"),
]


def _snapshot() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(seed_guide.SNAPSHOT.read_text(encoding="utf-8"))
    return data


def _causes(title: str) -> list[str]:
    return sorted({KB.rule_by_id[r].cause for r in KB.seed_sections[title]})


def _actions(cause: str) -> str:
    return "\n".join(KB.causes[cause].actions)


def _section_texts() -> dict[str, str]:
    assert SEED is not None
    return dict(seed_guide.sections(SEED))


@needs_seed
def test_the_workarounds_file_is_what_the_guide_gives() -> None:
    assert SEED is not None
    assert seed_guide.extract(SEED) == _snapshot(), "run: python tests/seed_guide.py"


def test_every_section_the_knowledge_base_names_is_a_section_of_the_guide() -> None:
    sections = _snapshot()["sections"]
    missing = [t for t in KB.seed_sections if seed_guide.norm_title(t) not in sections]
    assert not missing


def test_every_section_that_gives_a_workaround_is_covered_by_the_knowledge_base() -> None:
    covered = {seed_guide.norm_title(t) for t in KB.seed_sections}
    giving = {t for t, w in _snapshot()["sections"].items() if w["commands"] or w["terms"]}
    assert giving, "the guide gives workarounds"
    assert giving <= covered, sorted(giving - covered)


@pytest.mark.parametrize("title", sorted(KB.seed_sections))
def test_the_guides_workarounds_are_in_the_actions_of_every_cause_covering_their_section(
    title: str,
) -> None:
    wanted = _snapshot()["sections"][seed_guide.norm_title(title)]
    for cause in _causes(title):
        text = _actions(cause)
        for pattern in wanted["commands"]:
            assert re.search(pattern, text), f"{cause}: no action matches {pattern!r}"
        for term in wanted["terms"]:
            assert term in text, f"{cause}: no action names {term!r}"


def test_the_guides_commands_reach_the_actions_the_issue_names() -> None:
    # The workarounds issue 9 lists, as read from the guide: they must not be vacuous.
    sections = _snapshot()["sections"]
    wanted = {p for w in sections.values() for p in w["commands"]}
    assert r"sysopt\s+connection\s+permit\-ipsec" in wanted
    assert r"ip\s+mtu\s+\S+" in wanted
    terms = sections[seed_guide.norm_title("Packet Encryption/Decryption Error")]["terms"]
    assert {"MTU", "CEF", "AIM", "ESP-DES/3DES"} <= set(terms)
    engine = _actions("crypto_engine_fault")
    assert all(t in engine for t in ("MTU", "CEF", "AIM", "ESP-DES/3DES"))


@pytest.mark.parametrize(("title", "phrase", "pattern"), PROSE, ids=lambda v: str(v)[:40])
def test_a_prose_workaround_is_in_the_actions_of_a_cause_covering_its_section(
    title: str, phrase: str, pattern: str
) -> None:
    assert any(re.search(pattern, _actions(c)) for c in _causes(title)), (title, pattern)


@needs_seed
@pytest.mark.parametrize(("title", "phrase", "pattern"), PROSE, ids=lambda v: str(v)[:40])
def test_a_prose_workaround_is_named_by_a_phrase_of_its_section(
    title: str, phrase: str, pattern: str
) -> None:
    assert phrase in _section_texts()[seed_guide.norm_title(title)]


_MESSAGE = re.compile(
    r"^(?:\d+[ywdh]\d+[wdhms]:\s*|\d{1,2}:\d\d:\d\d:\s*|[A-Z][a-z]{2}\s+\d+ [\d:]+(?: \S+ \d+:)?:?\s*)?"
    r"(?:ISAKMP|IPSEC\(|IPSec\(|ICMP:|%|\[IKEv|crypto_isakmp|oakley_|OAK_|return status"
    r"|INITIAL_CONTACT)"
)


@needs_seed
def test_every_message_line_of_the_guides_examples_parses_to_a_kind() -> None:
    """Lines of the example blocks that start with a debug module, a message tag or a PIX
    state (after an uptime or syslog stamp). Not: attribute dumps that lost their module in
    the scraped copy (``encaps is 1``), show output, configuration, ping dialogs."""
    assert SEED is not None
    lines = 0
    missing: list[str] = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", SEED, re.S):
        parser = Parser(year=2024, context_ts=1_709_827_200.0)
        for record in iter_records(block.splitlines()):
            first = record.splitlines()[0].strip()
            if not _MESSAGE.match(first):
                continue
            lines += 1
            ev = parser.parse(record)
            if not isinstance(ev, Event) or ev.kind is None:
                missing.append(first)
    assert lines >= 200
    assert not missing, missing
