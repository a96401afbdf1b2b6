"""ConsoleBuffer (the serial console's output: independent cursors, waits, logs) and BufferSpawn,
the pexpect spawn over it, without a guest (their dialogue with the fake guest is in
test_sessions)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pexpect
import pytest

from virtlib.sessions.buffer import ConsoleBuffer
from virtlib.sessions.transport import BufferSpawn

# --- ConsoleBuffer -----------------------------------------------------------------------


def test_buffer_has_independent_cursors() -> None:
    buffer = ConsoleBuffer()
    buffer.append(b"hello ")
    first = BufferSpawn(buffer, lambda data: None)
    second = BufferSpawn(buffer, lambda data: None)
    assert first.read_nonblocking(100, 0) == "hello "
    buffer.append(b"world")
    late = BufferSpawn(buffer, lambda data: None, start_at_end=True)
    assert first.read_nonblocking(100, 0) == "world"
    assert second.read_nonblocking(3, 0) == "hel"
    assert second.read_nonblocking(100, 0) == "lo world"
    with pytest.raises(pexpect.TIMEOUT):
        late.read_nonblocking(100, 0)
    assert buffer.read(0, 100, 0) == b"hello world"
    assert buffer.read(6, 2, 0) == b"wo"
    assert buffer.size == 11


def test_buffer_read_waits_up_to_the_timeout() -> None:
    buffer = ConsoleBuffer()
    start = time.monotonic()
    assert buffer.read(0, 10, 0.1) == b""
    assert 0.09 <= time.monotonic() - start < 1


def test_buffer_read_wakes_up_when_data_arrives() -> None:
    buffer = ConsoleBuffer()
    result: list[bytes | None] = []
    reader = threading.Thread(target=lambda: result.append(buffer.read(0, 10, 5)))
    start = time.monotonic()
    reader.start()
    buffer.append(b"data")
    reader.join()
    assert result == [b"data"]
    assert time.monotonic() - start < 1


def test_buffer_read_returns_none_at_end_of_stream() -> None:
    buffer = ConsoleBuffer()
    buffer.append(b"last words")
    buffer.close()
    assert buffer.closed
    assert buffer.read(0, 100, 1) == b"last words"
    start = time.monotonic()
    assert buffer.read(10, 100, 5) is None
    assert time.monotonic() - start < 1


def test_buffer_close_wakes_a_waiting_reader() -> None:
    buffer = ConsoleBuffer()
    result: list[bytes | None] = []
    reader = threading.Thread(target=lambda: result.append(buffer.read(0, 10, 5)))
    start = time.monotonic()
    reader.start()
    buffer.close()
    reader.join()
    assert result == [None]
    assert time.monotonic() - start < 1


def test_buffer_reopen_continues_the_same_output() -> None:
    buffer = ConsoleBuffer()
    buffer.append(b"before reboot\n")
    buffer.close()
    assert buffer.read(14, 10, 0) is None
    buffer.reopen()
    assert not buffer.closed
    assert buffer.read(14, 10, 0) == b""
    buffer.append(b"after\n")
    assert buffer.read(14, 10, 0) == b"after\n"
    assert buffer.get_output() == "before reboot\nafter\n"


def test_buffer_mark_goes_to_output_and_log(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    buffer = ConsoleBuffer(log)
    buffer.append(b"boot")
    buffer.mark("console re-attached")
    assert buffer.get_output() == "boot\n[virtlib] console re-attached\n"
    assert log.read_bytes() == b"boot\n[virtlib] console re-attached\n"
    buffer.release()


def test_buffer_log_gets_every_byte_and_release_closes_it(tmp_path: Path) -> None:
    log = tmp_path / "vm" / "logs" / "serial.log"  # parents are made
    buffer = ConsoleBuffer(log)
    chunks = [b"BIOS\r\n", b"\xff\xfe not utf-8 \xc3", b"\xa9 split\r\n", b"", b"login: "]
    for chunk in chunks:
        buffer.append(chunk)
    assert log.read_bytes() == b"".join(chunks)  # unbuffered: there at once
    assert "\ufffd" in buffer.get_output()  # undecodable bytes are replaced in text
    assert "\u00e9 split" in buffer.get_output()
    buffer.close()
    buffer.append(b"after close\n")  # close() keeps the log for reopen()
    assert log.read_bytes().endswith(b"after close\n")
    buffer.release()
    buffer.append(b"after release\n")
    assert not log.read_bytes().endswith(b"after release\n")
    assert buffer.get_output().endswith("after release\n")
    buffer.release()  # twice is fine


def test_buffer_log_is_appended_not_truncated(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    first = ConsoleBuffer(log)
    first.append(b"first boot\n")
    first.release()
    second = ConsoleBuffer(log)
    second.append(b"second boot\n")
    second.release()
    assert log.read_bytes() == b"first boot\nsecond boot\n"


def test_buffer_concurrent_appends_keep_each_threads_order(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    buffer = ConsoleBuffer(log)
    threads_count, appends = 8, 300
    barrier = threading.Barrier(threads_count)

    def writer(index: int) -> None:
        barrier.wait()
        for n in range(appends):
            buffer.append(f"t{index}:{n};".encode())

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tokens = [token for token in buffer.get_output().split(";") if token]
    assert len(tokens) == threads_count * appends
    for index in range(threads_count):
        mine = [int(t.split(":")[1]) for t in tokens if t.startswith(f"t{index}:")]
        assert mine == list(range(appends))
    assert log.read_bytes() == buffer.get_output().encode()
    buffer.release()


# --- BufferSpawn as a pexpect spawn (the dialogue with a guest is in test_sessions) ---


def test_buffer_spawn_timeout_and_eof() -> None:
    buffer = ConsoleBuffer()
    spawn = BufferSpawn(buffer, lambda data: None)
    start = time.monotonic()
    with pytest.raises(pexpect.TIMEOUT):
        spawn.expect("never", timeout=0.2)
    assert time.monotonic() - start < 1
    assert spawn.expect([pexpect.TIMEOUT, "never"], timeout=0.05) == 0
    buffer.append(b"goodbye\r\n")
    buffer.close()
    with pytest.raises(pexpect.EOF):
        spawn.expect("never", timeout=2)
    assert not spawn.isalive()
    assert spawn.before == "goodbye\r\n"
    assert spawn.expect([pexpect.EOF], timeout=1) == 0


def test_buffer_spawn_skip_pending() -> None:
    buffer = ConsoleBuffer()
    spawn = BufferSpawn(buffer, lambda data: None)
    buffer.append(b"old boot noise\r\n")
    spawn.skip_pending()
    buffer.append(b"new\r\n")
    assert spawn.read_nonblocking(100, 0) == "new\r\n"
    assert buffer.get_output() == "old boot noise\r\nnew\r\n"  # the buffer keeps everything


def test_buffer_spawn_decodes_utf8_split_across_reads() -> None:
    buffer = ConsoleBuffer()
    spawn = BufferSpawn(buffer, lambda data: None)
    buffer.append("caf\u00e9".encode())
    assert spawn.read_nonblocking(4, 0) == "caf"  # half of the é is held back
    assert spawn.read_nonblocking(4, 0) == "\u00e9"
    buffer.append(b"\xff!")
    assert spawn.read_nonblocking(4, 0) == "\ufffd!"


def test_buffer_spawn_send_close_and_logs() -> None:
    buffer = ConsoleBuffer()
    sent: list[bytes] = []
    spawn = BufferSpawn(buffer, sent.append)
    read_log: list[str] = []
    send_log: list[str] = []
    spawn.logfile_read = type("Log", (), {"write": read_log.append, "flush": lambda self: None})()
    spawn.logfile_send = type("Log", (), {"write": send_log.append, "flush": lambda self: None})()
    assert spawn.send("abc") == 3
    assert spawn.send(b"\x01") == 1
    spawn.sendline("ls")
    spawn.write("w")
    assert sent == [b"abc", b"\x01", b"ls\n", b"w"]
    assert send_log == ["abc", "\x01", "ls\n", "w"]
    buffer.append(b"out")
    spawn.read_nonblocking(10, 0)
    assert read_log == ["out"]
    assert spawn.isalive()
    spawn.close()
    assert not spawn.isalive()
    with pytest.raises(OSError, match="closed"):
        spawn.send("x")


def test_buffer_spawn_is_alive_again_after_reopen() -> None:
    buffer = ConsoleBuffer()
    spawn = BufferSpawn(buffer, lambda data: None)
    buffer.close()
    with pytest.raises(pexpect.EOF):
        spawn.read_nonblocking(10, 0)
    buffer.reopen()
    buffer.append(b"rebooted\r\n")
    assert spawn.read_nonblocking(100, 0) == "rebooted\r\n"
    assert spawn.isalive()
