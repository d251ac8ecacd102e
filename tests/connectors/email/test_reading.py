"""How the desk reads a mail: the text the customer wrote this time (quoted history and
signatures cut, in English and Chinese clients' styles), HTML-only mail as text, attachments
listed, the thread it answers; and which mail is never answered."""

from email.message import EmailMessage

import pytest

from connectors.email import automatic, parsing
from connectors.email.quotes import latest_reply
from tests.connectors.email.helpers import customer_mail

OWN = "support@shop.test"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "Where is my order?\n\nOn Sun, Dec 6, 2026 at 10:00 AM Shop <support@shop.test> "
            "wrote:\n> Hello, how can we help?\n",
            "Where is my order?",
        ),
        ("Where is my order?\n\n-- \nMia Chen\nACME Ltd.\n", "Where is my order?"),
        ("Danke!\n\nAm 06.12.2026 um 10:00 schrieb Shop <s@shop.test>:\n> alt\n", "Danke!"),
        (
            "Hi,\nmy parcel is late.\n\nFrom: Shop <support@shop.test>\nSent: Sunday, 6 "
            "December 2026 10:00\nTo: Mia\nSubject: Re: order\n\nearlier text",
            "Hi,\nmy parcel is late.",
        ),
        # Gmail and Apple Mail in Chinese.
        (
            "我的订单还没有收到，请帮我查一下。\n\n在 2026年12月6日 周日 10:00，客服 "
            "<support@shop.test> 写道：\n> 您好，请问有什么可以帮您？\n",
            "我的订单还没有收到，请帮我查一下。",
        ),
        # Foxmail / QQ Mail.
        (
            "好的，谢谢\n\n------------------ 原始邮件 ------------------\n发件人: "
            '"客服"<support@shop.test>;\n发送时间: 2026年12月6日\n主题: Re: 订单\n\n您好\n',
            "好的，谢谢",
        ),
        # Outlook in Chinese.
        (
            "收到了\n\n发件人: 客服 <support@shop.test>\n发送时间: 2026年12月6日 10:00\n"
            "收件人: 我\n主题: 订单\n\n旧的内容",
            "收到了",
        ),
        ("Just a question, no quote.", "Just a question, no quote."),
        (
            "I need:\n- a refund\n- a new box\n\nThanks",
            "I need:\n- a refund\n- a new box\n\nThanks",
        ),
        ("Thanks!\n\nSent from my iPhone\n", "Thanks!"),
    ],
)
def test_quoted_history_and_signatures_are_cut(body, expected):
    assert latest_reply(body) == expected


def test_an_html_only_mail_is_read_as_text_and_attachments_are_listed():
    mail = EmailMessage()
    mail["From"] = "Mia <mia@customer.test>"
    mail["Subject"] = "Photo of the damage"
    mail["Message-ID"] = "<h1@customer.test>"
    mail.set_content(
        "<html><body><p>The box was <b>broken</b>.</p><p>See the photo.</p></body></html>",
        subtype="html",
    )
    mail.add_attachment(
        b"\x89PNG" + b"0" * 996, maintype="image", subtype="png", filename="box.png"
    )
    parsed = parsing.parse(bytes(mail))
    assert parsed.text == "The box was broken.\n\nSee the photo."
    assert "<" not in parsed.text
    assert parsed.attachments == (parsing.Attachment(name="box.png", type="image/png", size=1000),)
    assert (parsed.sender, parsed.sender_name) == ("mia@customer.test", "Mia")


def test_the_thread_ids_put_the_nearest_first_and_a_mail_without_id_gets_one():
    mail = customer_mail(
        text="hi", message_id="<c@x>", in_reply_to="<b@x>", references="<a@x> <b@x>"
    )
    assert parsing.parse(bytes(mail)).thread_ids == ("<b@x>", "<a@x>")
    del mail["Message-ID"]
    one, two = parsing.parse(bytes(mail)), parsing.parse(bytes(mail))
    assert one.message_id == two.message_id and one.message_id.startswith("<sha256.")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Auto_Submitted": "auto-replied"}, "auto-reply"),
        ({"Auto_Submitted": "auto-generated"}, "auto-reply"),
        ({"X_Autoreply": "yes"}, "auto-reply"),
        ({"X_Autorespond": "Out of office"}, "auto-reply"),
        ({"Precedence": "bulk"}, "auto-reply"),
        ({"Precedence": "junk"}, "auto-reply"),
        ({"Precedence": "list"}, "auto-reply"),
        ({"List_Id": "<news.customer.test>"}, "auto-reply"),
        ({"X_Auto_Response_Suppress": "OOF"}, "auto-reply"),
        ({"sender": "MAILER-DAEMON@mx.customer.test"}, "bounce"),
        ({"sender": "postmaster@customer.test"}, "bounce"),
        ({"Return_Path": "<>"}, "bounce"),
        ({"sender": f"Shop <{OWN}>"}, "loop"),
        ({"message_id": "<desk.123.456@shop.test>"}, "loop"),
        ({"Auto_Submitted": "no"}, None),
        ({"Precedence": "normal"}, None),
        ({"message_id": "<desk.123.456@customer.test>"}, None),  # not our domain
    ],
)
def test_mail_no_one_should_answer_is_recognised(headers, reason):
    mail = customer_mail(text="I am away until Monday.", **headers)
    assert automatic.reason_to_ignore(parsing.parse(bytes(mail)), own_address=OWN) == reason


def test_a_delivery_report_is_a_bounce():
    report = EmailMessage()
    report["From"] = "Mail Delivery System <mailer@mx.customer.test>"
    report["Message-ID"] = "<r1@mx.customer.test>"
    report.set_content("Your message could not be delivered.")
    report.make_mixed()
    report.replace_header("Content-Type", 'multipart/report; report-type="delivery-status"')
    parsed = parsing.parse(bytes(report))
    assert automatic.reason_to_ignore(parsed, own_address=OWN) == "bounce"


def test_an_empty_mail_is_ignored():
    parsed = parsing.parse(bytes(customer_mail(text="\n\n")))
    assert automatic.reason_to_ignore(parsed, own_address=OWN) == "empty"
