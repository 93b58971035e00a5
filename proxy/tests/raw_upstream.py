"""An upstream that misbehaves on purpose: it answers every connection with bytes the test chose, as
written (broken headers, lying lengths, script-laden HTML), and records each request head it read."""

import socket
import threading


class RawUpstream:
    """`with RawUpstream(answer) as raw:` serves `answer` (bytes, sent as is) on 127.0.0.1:`raw.port`,
    then closes the connection; `raw.requests` holds the request heads received (bytes). With
    `drip_from`, the answer's bytes from there on come one at a time, `drip_every` seconds apart."""

    def __init__(self, answer: bytes, *, drip_from: int | None = None, drip_every: float = 0.25) -> None:
        self.answer = answer
        # From this byte of the answer on, one byte every `drip_every` seconds (a slow upstream).
        self.drip_from, self.drip_every = drip_from, drip_every
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"raw-upstream-{self.port}", daemon=True)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(5)
            head = b""
            try:
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    part = connection.recv(65536)
                    if not part:
                        return
                    head += part
                self.requests.append(head.split(b"\r\n\r\n", 1)[0])
                if self.drip_from is None:
                    connection.sendall(self.answer)
                else:
                    connection.sendall(self.answer[: self.drip_from])
                    for index in range(self.drip_from, len(self.answer)):
                        if self._stopping.wait(self.drip_every):
                            return
                        connection.sendall(self.answer[index : index + 1])
                connection.shutdown(socket.SHUT_WR)
            except OSError:
                return

    def __enter__(self) -> "RawUpstream":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._listener.close()
        self._thread.join(2)


def http_answer(status_line: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """An HTTP/1.1 answer written byte for byte as given (no Content-Length added)."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return f"{status_line}\r\n{head}\r\n".encode("latin-1") + body
