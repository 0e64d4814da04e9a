"""A minimal SMTP receiver with STARTTLS, standing in for another provider's MX in
pecd's relay tests. Prints its port on the first line of stdout, then writes each
received message to OUTDIR/<n>.eml with a .env file (MAIL FROM and RCPT TO lines) and
a .wire file (the DATA exactly as it came, dot-stuffing and final dot included).

Usage: smtp_sink.py CERT KEY OUTDIR GREETING_DELAY_SECONDS
Recipients whose local part starts with "reject" get 550; "later" get 451.
Environment: SINK_STARTTLS=0 makes it an ordinary server that offers no STARTTLS;
SINK_8BITMIME=0 stops it from offering 8BITMIME; SINK_BROKEN_TLS=1 answers STARTTLS
with 220 and then hangs up instead of the handshake (the first time only);
SINK_REFUSE_TLS=1 offers STARTTLS but answers the command with 454 (TLS not available).
SINK_CLOSE_AFTER_MESSAGE=1 hangs up right after the 250 to each message (as a server whose
idle timeout ran out would, for a client keeping the session for its next transaction).
Each message also gets a .meta file:
"tls=0|1", the MAIL FROM parameters ("params=...") and the connection it came on
("conn=N", connections numbered from 1 in accept order).
"""
import os
import socket
import ssl
import sys
import threading
import time

cert, key, outdir, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
offer_tls = os.environ.get("SINK_STARTTLS", "1") != "0"
offer_8bit = os.environ.get("SINK_8BITMIME", "1") != "0"
broken_tls = [os.environ.get("SINK_BROKEN_TLS", "0") == "1"]
refuse_tls = os.environ.get("SINK_REFUSE_TLS", "0") == "1"
close_after = os.environ.get("SINK_CLOSE_AFTER_MESSAGE", "0") == "1"
counter = [0]
lock = threading.Lock()


def handle(conn, conn_no):
    time.sleep(delay)
    f = conn.makefile("rb")
    tls = False

    def send(line):
        conn.sendall(line.encode() + b"\r\n")

    send("220 sink.test ESMTP")
    mail_from, rcpts, params = None, [], ""
    while True:
        line = f.readline()
        if not line:
            return
        cmd = line.decode(errors="replace").strip()
        up = cmd.upper()
        if up.startswith("EHLO"):
            caps = ["PIPELINING"]
            if offer_8bit:
                caps.append("8BITMIME")
            if offer_tls and not tls:
                caps.append("STARTTLS")
            send("250-sink.test")
            for c in caps[:-1]:
                send("250-" + c)
            send("250 " + caps[-1])
        elif up == "STARTTLS" and not tls and offer_tls and refuse_tls:
            send("454 4.7.0 TLS not available due to temporary reason")
        elif up == "STARTTLS" and not tls and offer_tls:
            send("220 go ahead")
            if broken_tls[0]:
                broken_tls[0] = False
                conn.close()
                return
            conn = ctx.wrap_socket(conn, server_side=True)
            f = conn.makefile("rb")
            tls = True
        elif up == "STARTTLS":
            send("502 5.5.1 STARTTLS not offered")
        elif up.startswith("MAIL FROM:"):
            rest = cmd[10:].strip()
            addr, _, params = rest.partition(" ")
            if not offer_8bit and "8BITMIME" in params.upper():
                send("555 5.5.4 BODY=8BITMIME not supported")
                continue
            mail_from, rcpts = addr.strip("<> "), []
            send("250 ok")
        elif up.startswith("RCPT TO:"):
            r = cmd[8:].strip("<> ")
            if r.startswith("reject"):
                send("550 5.1.1 no such user")
            elif r.startswith("later"):
                send("451 4.3.0 try later")
            else:
                rcpts.append(r)
                send("250 ok")
        elif up == "DATA":
            send("354 go")
            data, raw = b"", b""
            while True:
                l = f.readline()
                raw += l
                if not l or l == b".\r\n":
                    break
                if l.startswith(b".."):
                    l = l[1:]
                data += l
            with lock:
                counter[0] += 1
                n = counter[0]
            with open(os.path.join(outdir, f"{n}.env"), "w") as e:
                e.write(mail_from + "\n" + "\n".join(rcpts) + "\n")
            with open(os.path.join(outdir, f"{n}.meta"), "w") as e:
                e.write(f"tls={int(tls)}\nparams={params}\nconn={conn_no}\n")
            with open(os.path.join(outdir, f"{n}.wire"), "wb") as w:
                w.write(raw)
            with open(os.path.join(outdir, f"{n}.eml.tmp"), "wb") as m:
                m.write(data)
            os.rename(os.path.join(outdir, f"{n}.eml.tmp"), os.path.join(outdir, f"{n}.eml"))
            send("250 2.0.0 queued")
            if close_after:
                conn.close()
                return
        elif up == "QUIT":
            send("221 bye")
            conn.close()
            return
        else:
            send("250 ok")


srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(os.environ.get("SINK_PORT", "0"))))
srv.listen(16)
print(srv.getsockname()[1], flush=True)
accepted = 0
while True:
    c, _ = srv.accept()
    accepted += 1
    threading.Thread(target=handle, args=(c, accepted), daemon=True).start()
