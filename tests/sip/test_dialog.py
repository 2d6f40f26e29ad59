"""Dialog state from a 2xx (RFC 3261 §12.1) and the requests it builds."""

from __future__ import annotations

from cloudphone.sip import Request, make_response
from cloudphone.sip.dialog import Dialog


def invite() -> Request:
    return Request(
        "INVITE",
        "sip:bob@b.example",
        [
            ("Via", "SIP/2.0/UDP a.example;branch=z9hG4bK1"),
            ("Record-Route", "<sip:p1.example;lr>, <sip:p2.example;lr>"),
            ("From", "Alice <sip:alice@a.example>;tag=at"),
            ("To", "<sip:bob@b.example>"),
            ("Call-ID", "dlg"),
            ("CSeq", "5 INVITE"),
            ("Contact", "<sip:alice@192.0.2.1>"),
        ],
    )


def test_uac_dialog_reverses_record_route_and_targets_contact() -> None:
    request = invite()
    ok = make_response(request, 200, to_tag="bt", headers=[("Contact", "<sip:bob@192.0.2.2>")])
    dialog = Dialog.from_uac_response(request, ok)
    assert dialog.route_set == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
    assert str(dialog.remote_target) == "sip:bob@192.0.2.2"
    ack = dialog.ack(5)
    assert (ack.method, ack.cseq.seq, ack.cseq.method) == ("ACK", 5, "ACK")
    assert ack.to_tag == "bt" and ack.from_tag == "at"
    assert ack.headers.get_all("route")[0] == "<sip:p2.example;lr>"
    bye = dialog.request("BYE")
    assert bye.cseq.seq == 6 and str(bye.uri) == "sip:bob@192.0.2.2"
    assert str(dialog.first_hop) == "sip:p2.example;lr"


def test_uas_dialog_keeps_record_route_order() -> None:
    dialog = Dialog.from_uas_request(invite(), local_tag="bt")
    assert dialog.route_set == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    bye = dialog.request("BYE")
    assert bye.from_tag == "bt" and bye.to_tag == "at"
    assert str(bye.uri) == "sip:alice@192.0.2.1" and bye.cseq.seq == 1
