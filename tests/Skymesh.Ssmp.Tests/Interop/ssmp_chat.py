#!/usr/bin/env python3
"""A separately written SSMP 1.1 chat between two clients, using only the standard library.

Usage: ssmp_chat.py HOST PORT

Two raw-socket clients, alice and bob, log in, subscribe, chat by UCAST, MCAST and BCAST, and leave.
Every response and event line is read field by field as docs/ssmp.md ("Lines on the wire") requires (a binary
payload may hold LF, so lines are never split on LF first) and compared byte for byte with what the
spec says must arrive. Prints a transcript; exits 0 when every check passed, 1 otherwise.
"""

import socket
import sys

TIMEOUT = 10.0
FORWARDABLE_WITH_ID_AND_PAYLOAD = (b"UCAST", b"MCAST")


class CheckFailed(Exception):
    pass


class Peer:
    def __init__(self, name, host, port):
        self.name = name
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.buf = b""
        self.checks = 0

    # --- reading, field by field -------------------------------------------------------------

    def _fill(self, n):
        """Makes sure at least n bytes are buffered."""
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise CheckFailed(f"{self.name}: the broker closed the connection (buffered {self.buf!r})")
            self.buf += chunk

    def _byte(self, i):
        self._fill(i + 1)
        return self.buf[i]

    def _token(self, i, what):
        """A run of non-SP, non-LF bytes starting at i; returns its end."""
        j = i
        while self._byte(j) not in (0x20, 0x0A):
            j += 1
            if j - i > 64:
                raise CheckFailed(f"{self.name}: {what} longer than 64 bytes")
        if j == i:
            raise CheckFailed(f"{self.name}: empty {what}")
        return j

    def _payload(self, i):
        """A payload starting at i (text, or binary with its 2-byte length prefix); returns the index of the LF after it."""
        first = self._byte(i)
        if first <= 0x03:
            length = (first << 8 | self._byte(i + 1)) + 1
            end = i + 2 + length
            if self._byte(end) != 0x0A:
                raise CheckFailed(f"{self.name}: binary payload of {length} bytes not followed by LF")
            return end
        j = i
        while self._byte(j) != 0x0A:
            j += 1
            if j - i > 1024:
                raise CheckFailed(f"{self.name}: text payload longer than 1024 bytes")
        return j

    def read_message(self):
        """Reads one response or event; returns it without its final LF."""
        for k in range(3):
            if not 0x30 <= self._byte(k) <= 0x39:
                raise CheckFailed(f"{self.name}: message does not start with a code: {self.buf[:16]!r}")
        code = self.buf[:3]
        sep = self._byte(3)
        if code != b"000":
            end = 3 if sep == 0x0A else self._payload(4)
        else:
            if sep != 0x20:
                raise CheckFailed(f"{self.name}: event without a sender")
            from_end = self._token(4, "sender")
            verb_start = from_end + 1
            verb_end = self._token(verb_start, "verb")
            verb = self.buf[verb_start:verb_end]
            if verb in FORWARDABLE_WITH_ID_AND_PAYLOAD:
                id_end = self._token(verb_end + 1, "identifier")
                end = self._payload(id_end + 1)
            elif verb == b"BCAST":
                end = self._payload(verb_end + 1)
            elif verb in (b"SUBSCRIBE", b"UNSUBSCRIBE"):
                id_end = self._token(verb_end + 1, "topic")
                end = id_end if self._byte(id_end) == 0x0A else self._token(id_end + 1, "flag")
            elif verb in (b"PING", b"PONG"):
                end = verb_end
            else:
                raise CheckFailed(f"{self.name}: unexpected event verb {verb!r}")
            if self._byte(end) != 0x0A:
                raise CheckFailed(f"{self.name}: event not ended by LF")
        message = self.buf[:end]
        self.buf = self.buf[end + 1:]
        print(f"{self.name} < {show(message)}")
        return message

    # --- checks ----------------------------------------------------------------------------------

    def send(self, request):
        print(f"{self.name} > {show(request)}")
        self.sock.sendall(request + b"\n")

    def expect(self, *expected):
        """The next messages are exactly these, in this order."""
        for want in expected:
            got = self.read_message()
            if got != want:
                raise CheckFailed(f"{self.name}: expected {show(want)}, got {show(got)}")
            self.checks += 1

    def expect_any_order(self, *expected):
        """The next messages are these, in any order (an event may overtake a response)."""
        got = sorted(self.read_message() for _ in expected)
        if got != sorted(expected):
            raise CheckFailed(f"{self.name}: expected {sorted(map(show, expected))}, got {list(map(show, got))}")
        self.checks += len(expected)

    def expect_nothing_more(self):
        """PING must be answered by the very next message."""
        self.send(b"PING")
        self.expect(b"000 . PONG")

    def expect_closed(self):
        if self.buf:
            raise CheckFailed(f"{self.name}: expected the close, got {show(self.buf)}")
        try:
            rest = self.sock.recv(1)
        except ConnectionResetError:
            rest = b""
        if rest:
            raise CheckFailed(f"{self.name}: expected the close, got {show(rest)}")
        print(f"{self.name} < (closed)")
        self.checks += 1
        self.sock.close()


def show(data):
    return repr(bytes(data))[2:-1]


def chat(host, port):
    alice = Peer("alice", host, port)
    bob = Peer("bob", host, port)

    alice.send(b"LOGIN alice open")
    alice.expect(b"200")
    bob.send(b"LOGIN bob open")
    bob.expect(b"200")

    # Subscriptions; bob watches presence, so he is told alice is already in the room.
    alice.send(b"SUBSCRIBE room")
    alice.expect(b"200")
    bob.send(b"SUBSCRIBE room PRESENCE")
    bob.expect_any_order(b"200", b"000 alice SUBSCRIBE room")
    alice.send(b"SUBSCRIBE room")
    alice.expect(b"409")

    # UCAST both ways, byte for byte, in order.
    alice.send(b"UCAST bob hi bob")
    alice.expect(b"200")
    bob.expect(b"000 alice UCAST bob hi bob")
    bob.send(b"UCAST alice  hello alice, a payload may start with a space")
    bob.send(b"UCAST alice second")
    bob.expect(b"200", b"200")
    alice.expect(b"000 bob UCAST alice  hello alice, a payload may start with a space", b"000 bob UCAST alice second")

    # A binary payload holding LF, and one of 1024 bytes made of LFs.
    alice.send(b"UCAST bob \x00\x02a\nb")
    alice.expect(b"200")
    bob.expect(b"000 alice UCAST bob \x00\x02a\nb")
    big = b"\x03\xff" + b"\n" * 1024
    bob.send(b"MCAST room " + big)
    bob.expect(b"200")
    alice.expect(b"000 bob MCAST room " + big)

    # MCAST reaches the other subscriber, not the sender.
    alice.send(b"MCAST room hello room")
    alice.expect(b"200")
    bob.expect(b"000 alice MCAST room hello room")
    alice.expect_nothing_more()

    # Errors that keep the connection.
    alice.send(b"UCAST carol anyone there?")
    alice.expect(b"404")
    alice.send(b"UNSUBSCRIBE lobby")
    alice.expect(b"404")
    alice.send(b"FROB x")
    alice.expect(b"501")
    alice.send(b"LOGIN alice open")
    alice.expect(b"405")

    # BCAST goes once to each peer sharing a topic.
    bob.send(b"SUBSCRIBE lobby")
    bob.expect(b"200")
    alice.send(b"SUBSCRIBE lobby")
    alice.expect(b"200")
    alice.send(b"BCAST bye all")
    alice.expect(b"200")
    bob.expect(b"000 alice BCAST bye all")
    bob.expect_nothing_more()

    # alice leaves; bob, watching the room, is told.
    alice.send(b"CLOSE")
    alice.expect(b"200")
    alice.expect_closed()
    bob.expect(b"000 alice UNSUBSCRIBE room")
    bob.send(b"UCAST alice are you there?")
    bob.expect(b"404")

    # A grammar violation: 400, then the broker closes.
    bob.send(b"ping")
    bob.expect(b"400")
    bob.expect_closed()
    return alice.checks + bob.checks


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        checks = chat(argv[1], int(argv[2]))
    except (CheckFailed, OSError) as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print(f"ssmp_chat: all {checks} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
