"""A minimal SMTP receiver with STARTTLS, standing in for another provider's MX in
pecd's relay tests. Prints its port on the first line of stdout, then writes each
received message to OUTDIR/<n>.eml with a .env file (MAIL FROM and RCPT TO lines) and
a .wire file (the DATA exactly as it came, dot-stuffing and final dot included).

Usage: smtp_sink.py CERT KEY OUTDIR GREETING_DELAY_SECONDS
Recipients whose local part starts with "reject" get 550; "later" get 451; so does MAIL FROM
a sender whose local part starts with "reject" (550), and RCPT before an accepted MAIL gets
503. A session ended by QUIT leaves a file OUTDIR/conn-N.quit.
Environment: SINK_STARTTLS=0 makes it an ordinary server that offers no STARTTLS;
SINK_8BITMIME=0 stops it from offering 8BITMIME; SINK_BROKEN_TLS=1 answers STARTTLS
with 220 and then hangs up instead of the handshake (the first time only);
SINK_REFUSE_TLS=1 offers STARTTLS but answers the command with 454 (TLS not available).
SINK_CLOSE_AFTER_MESSAGE=1 hangs up right after the 250 to each message (as a server whose
idle timeout ran out would, for a client keeping the session for its next transaction).
SINK_PIPELINING=0 stops it from offering PIPELINING (RFC 2920). DATA after no accepted
recipient gets 554; with SINK_DATA_WITHOUT_RCPT=1 it gets 354 (as some servers answer: the
case RFC 2920 section 3.1 names) and what follows is written as a message.
Each message also gets a .meta file:
"tls=0|1", the MAIL FROM parameters ("params=..."), the connection it came on
("conn=N", connections numbered from 1 in accept order) and "pipelined=0|1" (whether more
commands had already arrived when MAIL FROM was read: the client did not wait for its reply).
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
offer_pipelining = os.environ.get("SINK_PIPELINING", "1") != "0"
data_without_rcpt = os.environ.get("SINK_DATA_WITHOUT_RCPT", "0") == "1"
counter = [0]
lock = threading.Lock()


class Lines:
    """Lines from a socket (plain or TLS), and whether more input is already waiting after
    the line just read."""

    def __init__(self, sock):
        self.sock, self.buf, self.pos = sock, bytearray(), 0

    def readline(self):
        while True:
            end = self.buf.find(b"\n", self.pos)
            if end >= 0:
                line = bytes(self.buf[self.pos : end + 1])
                self.pos = end + 1
                if self.pos > 65536:
                    del self.buf[: self.pos]
                    self.pos = 0
                return line
            chunk = self.sock.recv(65536)
            if not chunk:
                line = bytes(self.buf[self.pos :])
                self.buf, self.pos = bytearray(), 0
                return line
            self.buf += chunk

    def waiting(self):
        return self.pos < len(self.buf)


def handle(conn, conn_no):
    time.sleep(delay)
    f = Lines(conn)
    tls = False
    pipelined = False

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
            caps = ["PIPELINING"] if offer_pipelining else []
            if offer_8bit:
                caps.append("8BITMIME")
            if offer_tls and not tls:
                caps.append("STARTTLS")
            lines = ["sink.test"] + caps
            for c in lines[:-1]:
                send("250-" + c)
            send("250 " + lines[-1])
        elif up == "STARTTLS" and not tls and offer_tls and refuse_tls:
            send("454 4.7.0 TLS not available due to temporary reason")
        elif up == "STARTTLS" and not tls and offer_tls:
            send("220 go ahead")
            if broken_tls[0]:
                broken_tls[0] = False
                conn.close()
                return
            conn = ctx.wrap_socket(conn, server_side=True)
            f = Lines(conn)
            tls = True
        elif up == "STARTTLS":
            send("502 5.5.1 STARTTLS not offered")
        elif up.startswith("MAIL FROM:"):
            rest = cmd[10:].strip()
            addr, _, params = rest.partition(" ")
            if not offer_8bit and "8BITMIME" in params.upper():
                send("555 5.5.4 BODY=8BITMIME not supported")
                continue
            pipelined = f.waiting()
            if addr.strip("<> ").startswith("reject"):
                mail_from, rcpts = None, []
                send("550 5.7.1 sender refused")
                continue
            mail_from, rcpts = addr.strip("<> "), []
            send("250 ok")
        elif up.startswith("RCPT TO:") and mail_from is None:
            send("503 5.5.1 MAIL first")
        elif up.startswith("RCPT TO:"):
            r = cmd[8:].strip("<> ")
            if r.startswith("reject"):
                send("550 5.1.1 no such user")
            elif r.startswith("later"):
                send("451 4.3.0 try later")
            else:
                rcpts.append(r)
                send("250 ok")
        elif up == "DATA" and mail_from is None:
            send("503 5.5.1 MAIL first")
        elif up == "DATA" and not rcpts and not data_without_rcpt:
            send("554 5.5.1 no valid recipients")
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
                e.write(f"tls={int(tls)}\nparams={params}\nconn={conn_no}\npipelined={int(pipelined)}\n")
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
            open(os.path.join(outdir, f"conn-{conn_no}.quit"), "w").close()
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
