"""Send one RFC 5424 line to the log host as a client that is not the host's rsyslog.

Plain TCP or TLS (--tls with a CA, a certificate and a key), framed as RFC 5425 syslog or as a
RELP session (--relp: open, syslog, close). Prints what the server did and always exits 0: the
tests judge delivery by what the log host stored.
"""

import argparse
import socket
import ssl

parser = argparse.ArgumentParser()
parser.add_argument("--tls", action="store_true")
parser.add_argument("--relp", action="store_true")
parser.add_argument("--ca")
parser.add_argument("--cert")
parser.add_argument("--key")
parser.add_argument("--server-name")
parser.add_argument("host")
parser.add_argument("port", type=int)
parser.add_argument("hostname")
parser.add_argument("program")
parser.add_argument("message")
args = parser.parse_args()

line = f"<14>1 2024-01-01T00:00:00Z {args.hostname} {args.program} - - - {args.message}".encode()


def relp_frame(txnr, command, data=b""):
    # RELP frame: TXNR SP COMMAND SP DATALEN [SP DATA] LF (https://www.rsyslog.com/doc/relp.html).
    return f"{txnr} {command} {len(data)}".encode() + (b" " + data if data else b"") + b"\n"


def answer(sock):
    try:
        data = sock.recv(4096)
        return "closed by server" if data == b"" else data.decode(errors="replace").strip()
    except TimeoutError:
        return "no answer"


try:
    sock = socket.create_connection((args.host, args.port), timeout=5)
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(args.ca)
        ctx.load_cert_chain(args.cert, args.key)
        sock = ctx.wrap_socket(sock, server_hostname=args.server_name)
    sock.settimeout(3)
    if args.relp:
        sock.sendall(relp_frame(1, "open", b"relp_version=0\nrelp_software=mlfleet-test\ncommands=syslog"))
        print("open:", answer(sock))
        sock.sendall(relp_frame(2, "syslog", line))
        print("syslog:", answer(sock))
        sock.sendall(relp_frame(3, "close"))
        print("close:", answer(sock))
    else:
        sock.sendall(line + b"\n")
        # Give the server time to answer (a TLS alert or a close) before closing our side.
        print("after send:", answer(sock))
    sock.close()
except (OSError, ssl.SSLError) as exc:
    print(f"refused: {exc!r}")
