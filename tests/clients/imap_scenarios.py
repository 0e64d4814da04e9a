"""Independent IMAP/POP3 clients for pecd's integration tests: Python's imaplib and
poplib over real TLS, trusting only the dev CA.

Usage: imap_scenarios.py SCENARIO HOST IMAP_PORT POP3_PORT SMTPS_PORT CA_FILE [ARGS...]
Prints one JSON object; the Rust test (tests/imap_access.rs) asserts on it.
"""
import email
import email.policy
import hashlib
import imaplib
import json
import poplib
import re
import smtplib
import socket
import ssl
import sys
import time

scenario, host, imap_port, pop_port, smtps_port, ca = sys.argv[1:7]
args = sys.argv[7:]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False  # the dev certificate names the provider's hosts; we dial 127.0.0.1


def imap(user, pw):
    m = imaplib.IMAP4_SSL(host, int(imap_port), ssl_context=ctx, timeout=60)
    m.login(user, pw)
    return m


def wait_for(m, folder, pattern, seconds=30):
    """Polls until a message whose Subject matches appears; returns its UID."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        m.select(folder)
        typ, data = m.uid("SEARCH", None, "SUBJECT", f'"{pattern}"')
        uids = data[0].split()
        if uids:
            return uids[-1].decode()
        time.sleep(0.2)
    raise SystemExit(json.dumps({"error": f"no message matching {pattern!r} in {folder}"}))


def leaves(msg, path=()):
    """(IMAP part path, part) of every leaf of the parsed message (RFC 3501 §6.4.5); an
    embedded message/rfc822 counts as a leaf."""
    if msg.is_multipart() and msg.get_content_type() != "message/rfc822":
        for i, p in enumerate(msg.get_payload(), 1):
            yield from leaves(p, path + (i,))
    else:
        yield (path or (1,)), msg


def idle_woken_by_append(m, other_conn, message):
    """IDLE on `m`'s INBOX while `other_conn` appends `message`: records in `out` the
    continuation, the first untagged line and how long it took, and the end of IDLE;
    logs both connections out."""
    m.select("INBOX")
    tag = m._new_tag().decode()
    m.send(f"{tag} IDLE\r\n".encode())
    out["idle_cont"] = m.readline().decode().strip()
    t0 = time.time()
    other_conn.append("INBOX", None, None, message)
    m.sock.settimeout(10)
    out["idle_event"] = m.readline().decode().strip()
    out["idle_secs"] = round(time.time() - t0, 3)
    m.send(b"DONE\r\n")
    out["idle_done"] = m.readline().decode().strip()
    other_conn.logout()
    m.logout()


def fetch_one(m, uid, item):
    typ, data = m.uid("FETCH", uid, f"({item})")
    for d in data:
        if isinstance(d, tuple):
            return d[1]
    return b""


out = {}
if scenario == "pec":
    # args: sender pw recipient pw — send a PEC from sender, read the envelope at recipient.
    s_user, s_pw, r_user, r_pw = args
    smtp = smtplib.SMTP_SSL(host, int(smtps_port), context=ctx, timeout=60)
    smtp.login(s_user, s_pw)
    body = (f"From: <{s_user}>\r\nTo: <{r_user}>\r\nSubject: Prova IMAP\r\nMessage-ID: <imap-1@mua.test>\r\n"
            "Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nCiao.\r\n")
    smtp.sendmail(s_user, [r_user], body.encode())
    smtp.quit()
    m = imap(r_user, r_pw)
    typ, folders = m.list()
    out["list"] = [f.decode() for f in folders]
    uid = wait_for(m, "INBOX", "POSTA CERTIFICATA")
    whole = fetch_one(m, uid, "BODY.PEEK[]")
    out["sha256"] = hashlib.sha256(whole).hexdigest()
    out["size"] = len(whole)
    typ, data = m.uid("FETCH", uid, "(FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)")
    out["meta"] = data[0].decode(errors="replace") if isinstance(data[0], bytes) else data[0][0].decode(errors="replace")
    parsed = email.message_from_bytes(whole, policy=email.policy.compat32)
    parts = []
    for path, part in leaves(parsed):
        name = part.get_filename()
        sec = ".".join(map(str, path))
        got = fetch_one(m, uid, f"BODY.PEEK[{sec}]")
        mime = fetch_one(m, uid, f"BODY.PEEK[{sec}.MIME]")
        if part.get_content_type() == "message/rfc822":
            # postacert.eml: the original message, carried unencoded inside the envelope.
            subject = fetch_one(m, uid, f"BODY.PEEK[{sec}.HEADER.FIELDS (SUBJECT)]")
            equal = got.startswith(b"") and b"Prova IMAP" in subject and got in whole
        else:
            payload = part.get_payload(decode=True)
            equal = email.message_from_bytes(mime + got).get_payload(decode=True) == payload
        parts.append({"path": sec, "type": part.get_content_type(), "filename": name,
                      "in_whole": got in whole, "mime_in_whole": mime in whole, "decoded_equal": equal})
    out["parts"] = parts
    partial = fetch_one(m, uid, "BODY.PEEK[]<0.20>")
    out["partial_ok"] = partial == whole[:20]
    # Flags round trip.
    m.uid("STORE", uid, "+FLAGS", "(\\Flagged $Etichetta)")
    typ, data = m.uid("FETCH", uid, "(FLAGS)")
    out["flags"] = data[0].decode()
    m.uid("STORE", uid, "-FLAGS", "(\\Flagged)")
    typ, data = m.uid("FETCH", uid, "(FLAGS)")
    out["flags_after"] = data[0].decode()
    typ, data = m.uid("SEARCH", None, "SUBJECT", '"Prova IMAP"')
    out["search_subject"] = data[0].decode()
    typ, data = m.uid("SEARCH", None, "SUBJECT", '"nessun oggetto simile"')
    out["search_none"] = data[0].decode()
    m.logout()
    # The sender's receipts carry X-Riferimento-Message-ID (rule: the envelope's id).
    ms = imap(s_user, s_pw)
    wait_for(ms, "INBOX", "ACCETTAZIONE")
    ms.select("INBOX")
    typ, data = ms.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (X-RIFERIMENTO-MESSAGE-ID)])")
    ref = None
    for d in data:
        if isinstance(d, tuple):
            mm = re.search(rb"X-Riferimento-Message-ID:\s*(\S+)", d[1], re.I)
            if mm:
                ref = mm.group(1).decode()
    out["ref"] = ref
    typ, data = ms.uid("SEARCH", None, "HEADER", "X-Riferimento-Message-ID", f'"{ref}"')
    out["search_ref"] = data[0].decode()
    ms.logout()
elif scenario == "mailbox":
    # args: user pw other_user — folders, MOVE, expunge, quota, isolation, IDLE.
    user, pw, other = args
    m = imap(user, pw)
    m.append("INBOX", "(\\Seen)", None, b"Subject: da spostare\r\nFrom: x@y.it\r\n\r\ncorpo\r\n")
    m.append("INBOX", None, None, b"Subject: da cancellare\r\nFrom: x@y.it\r\n\r\ncorpo\r\n")
    m.select("INBOX")
    typ, data = m.uid("SEARCH", None, "SUBJECT", '"da spostare"')
    uid = data[0].split()[-1].decode()
    typ, data = m.uid("MOVE", uid, "Archive")
    out["move"] = typ
    out["move_data"] = str(m.response("COPYUID"))
    m.select("Archive")
    typ, data = m.search(None, "ALL")
    out["archive"] = data[0].decode()
    m.select("INBOX")
    typ, data = m.search(None, "SUBJECT", '"da cancellare"')
    n = data[0].split()[-1]
    m.store(n, "+FLAGS", "(\\Deleted)")
    typ, data = m.expunge()
    out["expunge"] = [d.decode() for d in data if d]
    typ, data = m.getquotaroot("INBOX")
    out["quota"] = [str(x) for x in data]
    typ, data = m.list()
    out["list"] = [f.decode() for f in data]
    try:
        typ, data = m.select(f'"{other}/INBOX"')
        out["other_select"] = typ
    except imaplib.IMAP4.error as e:
        out["other_select"] = "error: " + str(e)
    typ, data = m.select("../" + other)
    out["escape_select"] = typ
    # IDLE: a second connection appends; this one must be told at once.
    idle_woken_by_append(m, imap(user, pw), b"Subject: nuova\r\n\r\nx\r\n")
elif scenario == "idle_elsewhere":
    # args: user pw other_imap_port — IDLE here; a message appended through another node
    # of the same store (several writers) must wake it (the nodes' change announcements).
    user, pw, other_port = args
    other_conn = imaplib.IMAP4_SSL(host, int(other_port), ssl_context=ctx, timeout=60)
    other_conn.login(user, pw)
    idle_woken_by_append(imap(user, pw), other_conn, b"Subject: altrove\r\n\r\nx\r\n")
elif scenario == "subscriptions":
    # args: user pw — SUBSCRIBE/LSUB/UNSUBSCRIBE kept across connections.
    user, pw = args
    lines = lambda data: [d.decode() for d in data if d]
    m = imap(user, pw)
    out["create"] = m.create("Progetti")[0]
    out["lsub_before"] = lines(m.lsub('""', "*")[1])
    out["subscribe"] = m.subscribe("Progetti")[0]
    out["subscribe_missing"] = m.subscribe("Fantasma")[0]
    out["lsub_subscribed"] = lines(m.lsub('""', "*")[1])
    out["delete"] = m.delete("Progetti")[0]
    m.logout()
    m = imap(user, pw)
    out["lsub_after_delete"] = lines(m.lsub('""', "*")[1])
    out["unsubscribe"] = m.unsubscribe("Fantasma")[0]
    out["lsub_after_unsubscribe"] = lines(m.lsub('""', "*")[1])
    out["list"] = lines(m.list()[1])
    m.logout()
elif scenario == "overquota":
    user, pw = args
    m = imap(user, pw)
    try:
        typ, data = m.append("INBOX", None, None, b"Subject: grande\r\n\r\n" + b"x" * 50000 + b"\r\n")
        out["append"] = [typ, [d.decode() for d in data]]
    except imaplib.IMAP4.error as e:
        out["append"] = ["NO", [str(e)]]
    typ, data = m.getquota('""')
    out["quota"] = [str(x) for x in data]
    m.logout()
elif scenario == "refusals":
    user, pw = args
    try:
        imap(user, "sbagliata")
        out["wrong_password"] = "accepted"
    except imaplib.IMAP4.error as e:
        out["wrong_password"] = str(e)
    # Plain text on the TLS port: no IMAP greeting is ever sent in clear.
    s = socket.create_connection((host, int(imap_port)), timeout=5)
    s.sendall(b"a1 LOGIN " + user.encode() + b" " + pw.encode() + b"\r\n")
    try:
        data = s.recv(1024)
    except Exception as e:
        data = b""
    out["plain_reply"] = data.decode(errors="replace")
    s.close()
elif scenario == "archive":
    # args: sender pw recipient pw — the security archive (Archivio di sicurezza): what a
    # PEC leaves in both archives, that the archive is read-only whatever the client asks,
    # and that deleting in the mailbox leaves the archived copy.
    s_user, s_pw, r_user, r_pw = args
    received, sent = "Archivio di sicurezza/Ricevuti", "Archivio di sicurezza/Inviati"
    smtp = smtplib.SMTP_SSL(host, int(smtps_port), context=ctx, timeout=60)
    smtp.login(s_user, s_pw)
    body = (f"From: <{s_user}>\r\nTo: <{r_user}>\r\nSubject: Prova archivio\r\n"
            "Message-ID: <archivio-1@mua.test>\r\nDate: Sat, 05 Dec 2026 10:00:00 +0100\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nDa conservare.\r\n")
    smtp.sendmail(s_user, [r_user], body.encode())
    smtp.quit()
    m = imap(r_user, r_pw)
    uid = wait_for(m, "INBOX", "Prova archivio")
    inbox_copy = fetch_one(m, uid, "BODY.PEEK[]")
    typ, folders = m.list()
    out["list"] = [f.decode() for f in folders]
    # SELECT of the archive: imaplib refuses to treat a READ-ONLY answer as writable.
    try:
        m.select(f'"{received}"')
        out["select"] = "read-write"
    except imaplib.IMAP4.readonly as e:
        out["select"] = "read-only"
    typ, data = m.select(f'"{received}"', readonly=True)
    auid = wait_for_ro = None
    deadline = time.time() + 30
    while time.time() < deadline and not auid:
        m.select(f'"{received}"', readonly=True)
        typ, data = m.uid("SEARCH", None, "SUBJECT", '"Prova archivio"')
        auid = (data[0].split() or [None])[-1]
        time.sleep(0.2)
    auid = auid.decode()
    out["archived_equal"] = fetch_one(m, auid, "BODY.PEEK[]") == inbox_copy
    typ, data = m.getquotaroot(f'"{received}"')
    out["quotaroot"] = [typ, str(data)]
    typ, data = m.uid("STORE", auid, "+FLAGS", "(\\Deleted)")
    out["store"] = [typ, [d.decode() for d in data if isinstance(d, bytes)]]
    refusals = {}
    typ, data = m.append(f'"{received}"', None, None, b"Subject: intruso\r\n\r\nx\r\n")
    refusals["append"] = [typ, data[0].decode()]
    for name, cmd in [("create", lambda: m.create(f'"{received}/Mia"')),
                      ("rename", lambda: m.rename(f'"{received}"', "Mia")),
                      ("delete", lambda: m.delete(f'"{received}"'))]:
        typ, data = cmd()
        refusals[name] = [typ, data[0].decode()]
    m.select("INBOX")
    typ, data = m.uid("COPY", uid, f'"{received}"')
    refusals["copy"] = [typ, data[0].decode()]
    out["refusals"] = refusals
    # The owner deletes the message from the INBOX: the archived copy stays, intact.
    m.uid("STORE", uid, "+FLAGS", "(\\Deleted)")
    m.expunge()
    typ, data = m.uid("SEARCH", None, "SUBJECT", '"Prova archivio"')
    out["inbox_after_delete"] = data[0].decode()
    m.select(f'"{received}"', readonly=True)
    typ, data = m.uid("SEARCH", None, "SUBJECT", '"Prova archivio"')
    out["archive_after_delete"] = data[0].decode()
    out["archived_equal_after_delete"] = fetch_one(m, auid, "BODY.PEEK[]") == inbox_copy
    typ, data = m.uid("FETCH", auid, "(FLAGS)")
    out["archived_flags"] = data[0].decode()
    m.logout()
    # The sender's archive: the transport envelope it sent, and its receipts.
    ms = imap(s_user, s_pw)
    wait_for(ms, "INBOX", "CONSEGNA")
    ms.select(f'"{sent}"', readonly=True)
    typ, data = ms.uid("SEARCH", None, "ALL")
    suids = data[0].split()
    out["sent_count"] = len(suids)
    env = fetch_one(ms, suids[-1].decode(), "BODY.PEEK[]") if suids else b""
    parsed = email.message_from_bytes(env)
    out["sent_subject"] = parsed.get("Subject", "")
    out["sent_type"] = parsed.get_content_type()
    out["sent_trasporto"] = parsed.get("X-Trasporto", "")
    ms.select(f'"{received}"', readonly=True)
    typ, data = ms.uid("SEARCH", None, "ALL")
    subjects = []
    for u in data[0].split():
        h = fetch_one(ms, u.decode(), "BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
        subjects.append(h.decode(errors="replace").strip())
    out["sender_received"] = subjects
    ms.logout()
elif scenario == "digests":
    # args: user pw — the SHA-256 of every INBOX message, in UID order.
    user, pw = args
    m = imap(user, pw)
    m.select("INBOX", readonly=True)
    typ, data = m.uid("SEARCH", None, "ALL")
    out["sha256"] = [hashlib.sha256(fetch_one(m, uid.decode(), "BODY.PEEK[]")).hexdigest()
                     for uid in data[0].split()]
    m.logout()
elif scenario == "subjects":
    # args: user pw — the Subject of every INBOX message (decoded, unfolded), in UID order.
    user, pw = args
    m = imap(user, pw)
    m.select("INBOX", readonly=True)
    typ, data = m.uid("SEARCH", None, "ALL")
    out["subjects"] = []
    for uid in data[0].split():
        h = fetch_one(m, uid.decode(), "BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
        msg = email.message_from_bytes(h, policy=email.policy.default)
        out["subjects"].append(str(msg["Subject"] or ""))
    m.logout()
elif scenario == "pop3":
    user, pw = args
    p = poplib.POP3_SSL(host, int(pop_port), context=ctx, timeout=60)
    out["capa"] = sorted(p.capa().keys())
    p.user(user)
    p.pass_(pw)
    count, size = p.stat()
    out["stat"] = [count, size]
    out["uidl"] = [x.decode() for x in p.uidl()[1]]
    resp, lines, octets = p.retr(1)
    whole = b"\r\n".join(lines) + b"\r\n"
    out["retr_sha256"] = hashlib.sha256(whole).hexdigest()
    resp, lines, octets = p.top(1, 0)
    out["top_has_subject"] = any(l.lower().startswith(b"subject:") for l in lines)
    p.dele(1)
    p.quit()
    p = poplib.POP3_SSL(host, int(pop_port), context=ctx, timeout=60)
    p.user(user)
    p.pass_(pw)
    out["stat_after"] = list(p.stat())
    p.quit()
    try:
        p = poplib.POP3_SSL(host, int(pop_port), context=ctx, timeout=60)
        p.user(user)
        p.pass_("sbagliata")
        out["wrong_password"] = "accepted"
    except poplib.error_proto as e:
        out["wrong_password"] = str(e)
print(json.dumps(out))
