"""Independent SMTP client for pecd's integration tests: Python's smtplib over real TLS.

Usage: smtp_scenarios.py SCENARIO HOST SMTPS_PORT SUBMISSION_PORT CA_FILE [ARGS...]
Prints one JSON object with what the server answered; the Rust test asserts on it.
"""
import json
import smtplib
import ssl
import sys
import base64

scenario, host, smtps_port, sub_port, ca = sys.argv[1:6]
args = sys.argv[6:]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False  # the dev certificate names the domain's hosts, we dial 127.0.0.1


def smtps():
    return smtplib.SMTP_SSL(host, int(smtps_port), context=ctx, timeout=60)


def message(sender, to, cc=None, subject="Prova PEC", extra="", body="Buongiorno,\r\nquesto e' un test.\r\n", msgid="<client-1@mua.test>"):
    h = f"From: Mittente <{sender}>\r\nTo: {', '.join(to)}\r\n"
    if cc:
        h += f"Cc: {', '.join(cc)}\r\n"
    h += f"Subject: {subject}\r\nMessage-ID: {msgid}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n{extra}"
    return (h + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body).encode()


out = {}
if scenario == "send":
    # args: user password to(comma) cc(comma or -) subject tiporicevuta(or -)
    user, password, to, cc, subject, tipo = args
    to = to.split(",")
    cc = [] if cc == "-" else cc.split(",")
    extra = "" if tipo == "-" else f"X-TipoRicevuta: {tipo}\r\n"
    s = smtps()
    s.login(user, password)
    refused = s.sendmail(user, to + cc, message(user, to, cc, subject, extra))
    out = {"refused": list(refused.keys()), "reply": s.noop()[0]}
    s.quit()
elif scenario == "forged_from":
    user, password, victim, to = args
    s = smtps()
    s.login(user, password)
    code, text = s.mail(victim)
    out["mail_from_code"], out["mail_from_text"] = code, text.decode()
    s.rset()
    # Envelope sender right, header From forged: refused by the access point.
    s.mail(user)
    s.rcpt(to)
    code, text = s.data(message(victim, [to]))
    out["data_code"], out["data_text"] = code, text.decode()
    s.quit()
elif scenario == "many_recipients":
    user, password, domain, n = args
    s = smtps()
    s.login(user, password)
    s.mail(user)
    codes = [s.rcpt(f"r{i}@{domain}")[0] for i in range(int(n))]
    out = {"codes": codes}
    s.quit()
elif scenario == "oversize":
    user, password, to, size = args
    s = smtps()
    s.login(user, password)
    s.mail(user)
    s.rcpt(to)
    head = message(user, [to], body="")
    body = b"x" * 998 + b"\r\n"
    data = head + body * ((int(size) - len(head)) // len(body) + 1)
    data = data[: int(size)]
    try:
        code, text = s.data(data)
    except smtplib.SMTPResponseException as e:
        code, text = e.smtp_code, e.smtp_error
    out = {"code": code, "text": text.decode(errors="replace"), "sent": len(data)}
    try:
        out["after"] = s.noop()[0]
    except Exception as e:  # the server may have closed: report it
        out["after"] = str(e)
elif scenario == "auth_before_starttls":
    user, password = args
    s = smtplib.SMTP(host, int(sub_port), timeout=60)
    s.ehlo()
    out["ehlo_has_auth"] = s.has_extn("auth")
    out["ehlo_has_starttls"] = s.has_extn("starttls")
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    code, text = s.docmd("AUTH", "PLAIN " + token)
    out["auth_code"], out["auth_text"] = code, text.decode()
    s.starttls(context=ctx)
    s.ehlo()
    out["after_tls_has_auth"] = s.has_extn("auth")
    code, _ = s.mail(user)
    out["mail_without_auth"] = code
    s.login(user, password)
    out["login_after_tls"] = "ok"
    s.quit()
elif scenario == "relay_without_auth":
    to = args[0]
    s = smtplib.SMTP(host, int(sub_port), timeout=60)
    s.starttls(context=ctx)
    s.ehlo()
    code, text = s.mail("someone@internet.example")
    out = {"mail_code": code, "text": text.decode()}
    s.quit()
elif scenario == "long_line":
    # args: user password. One over-long command line whose tail looks like a command:
    # exactly one 500 must come back, and the dialogue must stay in step afterwards.
    user, password = args
    s = smtps()
    s.login(user, password)
    code, text = s.docmd("NOOP", "x" * 5000 + " MAIL FROM:<" + user + ">")
    out = {"long_code": code, "long_text": text.decode(errors="replace")}
    out["after_code"], after = s.docmd("RSET")
    out["after_text"] = after.decode()
    s.quit()
elif scenario == "send_raw":
    # args: user password to header_block(\n-separated, without To/From) -> data reply
    user, password, to, headers = args
    s = smtps()
    s.login(user, password)
    body = f"From: <{user}>\r\nTo: <{to}>\r\n" + headers.replace("\n", "\r\n") + "\r\n\r\nciao\r\n"
    s.mail(user)
    s.rcpt(to)
    code, text = s.data(body.encode())
    out = {"code": code, "text": text.decode()}
    s.quit()
elif scenario == "logins":
    # args: user password user password ...: one connection and exactly one AUTH PLAIN
    # per pair (smtplib's login() would retry with LOGIN); the reply code of each.
    codes, texts = [], []
    for user, pw in zip(args[0::2], args[1::2]):
        s = smtps()
        s.user, s.password = user, pw
        s.ehlo_or_helo_if_needed()
        try:
            code, text = s.auth("PLAIN", s.auth_plain)
        except smtplib.SMTPAuthenticationError as e:
            code, text = e.smtp_code, e.smtp_error
        codes.append(code)
        texts.append(text.decode(errors="replace"))
        s.close()
    out = {"codes": codes, "texts": texts}
elif scenario == "long_data_line":
    # args: user password to smtp_port. The same message with one 5000-octet line, sent
    # by the user on 465 and by an Internet sender on port 25 (STARTTLS as offered).
    user, password, to, smtp_port = args
    long_body = "x" * 4998 + "\r\nfine riga lunga\r\n"
    s = smtps()
    s.login(user, password)
    s.mail(user)
    s.rcpt(to)
    try:
        code, text = s.data(message(user, [to], body=long_body))
    except smtplib.SMTPResponseException as e:
        code, text = e.smtp_code, e.smtp_error
    out["submission_code"], out["submission_text"] = code, text.decode(errors="replace")
    out["submission_after"] = s.noop()[0]
    s.quit()
    s = smtplib.SMTP(host, int(smtp_port), timeout=60)
    s.ehlo("mx.internet.example")
    if s.has_extn("starttls"):
        s.starttls(context=ctx)
        s.ehlo("mx.internet.example")
    s.mail("someone@internet.example")
    s.rcpt(to)
    try:
        code, text = s.data(message("someone@internet.example", [to], body=long_body, msgid="<long-1@internet.example>"))
    except smtplib.SMTPResponseException as e:
        code, text = e.smtp_code, e.smtp_error
    out["incoming_code"], out["incoming_text"] = code, text.decode(errors="replace")
    s.quit()
elif scenario == "wrong_password":
    user = args[0]
    s = smtps()
    try:
        s.login(user, "not-the-password")
        out["code"] = 235
    except smtplib.SMTPAuthenticationError as e:
        out["code"] = e.smtp_code
    s.close()
print(json.dumps(out))
