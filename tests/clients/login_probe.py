"""Logins as a mail client makes them, for pecd's password tests: Python's imaplib,
poplib and smtplib over real TLS, trusting only the dev CA.

Usage: login_probe.py SCENARIO HOST IMAP_PORT POP3_PORT SMTPS_PORT CA_FILE USER PASSWORD

  logins  one login per protocol; prints {"imap": ..., "pop3": ..., "smtp": ...}, each
          "ok" or the server's refusal text
  card    USER is the authorization identity ("" for none), PASSWORD is
          "CERT.pem:KEY.pem" (or "" for no client certificate): SASL EXTERNAL on
          each protocol with that certificate in the TLS handshake; prints
          {"imap": ..., "pop3": ..., "smtp": ...}, each "ok" or the refusal
  held    logs in on IMAP, POP3 and SMTP, prints {"ready": true}, waits for a line on
          stdin, then sends IMAP NOOP, POP3 STAT and a message over SMTP on the same
          connections and prints what each got ("ok", or the server's words as the
          connection ended)
"""
import imaplib
import json
import poplib
import smtplib
import ssl
import sys

scenario, host, imap_port, pop_port, smtps_port, ca, user, pw = sys.argv[1:9]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False  # the dev certificate names the provider's hosts; we dial 127.0.0.1


def imap_login():
    m = imaplib.IMAP4_SSL(host, int(imap_port), ssl_context=ctx, timeout=60)
    m.login(user, pw)
    return m


def pop_login():
    p = poplib.POP3_SSL(host, int(pop_port), context=ctx, timeout=60)
    p.user(user)
    p.pass_(pw)
    return p


def text(e):
    s = e.args[0] if e.args else str(e)
    return s.decode(errors="replace") if isinstance(s, bytes) else str(s)


if scenario == "card":
    import base64
    if pw:
        cert, key = pw.split(":")
        ctx.load_cert_chain(cert, key)
    authzid = user.encode()
    ir = base64.b64encode(authzid).decode() if authzid else "="
    out = {}
    try:
        m = imaplib.IMAP4_SSL(host, int(imap_port), ssl_context=ctx, timeout=60)
        out["imap_caps"] = " ".join(m.capabilities)
        m.authenticate("EXTERNAL", lambda _: authzid)
        typ, _ = m.select("INBOX")
        out["imap"] = "ok" if typ == "OK" else typ
        m.logout()
    except imaplib.IMAP4.error as e:
        out["imap"] = text(e)
    try:
        p = poplib.POP3_SSL(host, int(pop_port), context=ctx, timeout=60)
        p._shortcmd(f"AUTH EXTERNAL {ir}")
        p.stat()
        out["pop3"] = "ok"
        p.quit()
    except poplib.error_proto as e:
        out["pop3"] = text(e)
    s = smtplib.SMTP_SSL(host, int(smtps_port), context=ctx, timeout=60)
    s.ehlo()
    out["smtp_auth"] = s.esmtp_features.get("auth", "")
    code, msg = s.docmd("AUTH", f"EXTERNAL {ir}")
    out["smtp"] = "ok" if code == 235 else f"{code} {msg.decode(errors='replace')}"
    s.close()
    print(json.dumps(out))
elif scenario == "logins":
    out = {}
    try:
        imap_login().logout()
        out["imap"] = "ok"
    except imaplib.IMAP4.error as e:
        out["imap"] = text(e)
    try:
        pop_login().quit()
        out["pop3"] = "ok"
    except poplib.error_proto as e:
        out["pop3"] = text(e)
    try:
        s = smtplib.SMTP_SSL(host, int(smtps_port), context=ctx, timeout=60)
        s.login(user, pw)
        s.quit()
        out["smtp"] = "ok"
    except smtplib.SMTPAuthenticationError as e:
        out["smtp"] = f"{e.smtp_code} {e.smtp_error.decode(errors='replace')}"
    print(json.dumps(out))
elif scenario == "held":
    m = imap_login()
    p = pop_login()
    smtp = smtplib.SMTP_SSL(host, int(smtps_port), context=ctx, timeout=60)
    smtp.login(user, pw)
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    out = {}
    try:
        typ, data = m.noop()
        out["imap"] = "ok" if typ == "OK" else f"{typ} {data}"
    except imaplib.IMAP4.abort as e:
        out["imap"] = text(e)
    except (OSError, imaplib.IMAP4.error) as e:
        out["imap"] = f"error: {e}"
    try:
        p.stat()
        out["pop3"] = "ok"
    except poplib.error_proto as e:
        out["pop3"] = text(e)
    except OSError as e:
        out["pop3"] = f"error: {e}"
    msg = (f"From: {user}\r\nTo: {user}\r\nSubject: dopo il cambio\r\n"
           "Message-ID: <held@probe.test>\r\n\r\ntesto\r\n").encode()
    try:
        smtp.sendmail(user, [user], msg)
        out["smtp"] = "ok"
    except smtplib.SMTPResponseException as e:
        out["smtp"] = f"{e.smtp_code} {e.smtp_error.decode(errors='replace')}"
    except (smtplib.SMTPServerDisconnected, OSError) as e:
        out["smtp"] = f"disconnected: {e}"
    print(json.dumps(out))
else:
    sys.exit(f"unknown scenario {scenario}")
