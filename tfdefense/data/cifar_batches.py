"""Reads CIFAR-10 python batches (`data_batch_1` ... `test_batch`) without unpickling.

The official batches are pickle streams of one dict: `data` (a uint8 numpy
array of shape (N, 3072)), `labels` (a list of ints), `batch_label` and
`filenames`. `read_batch` decodes the stream opcode by opcode and builds only
plain values: dicts, lists, tuples, ints, floats, bytes, str, None, bools and
numeric numpy arrays. It imports and calls nothing named in the file: the few
names a numpy array's pickle refers to (`numpy.core.multiarray._reconstruct`,
`numpy.ndarray`, `numpy.dtype`, `numpy._core.numeric._frombuffer`,
`_codecs.encode`, `bytes`) are recognised by name and rebuilt here; any other name, and
any opcode outside that subset, raises a `ValueError`. A crafted batch can
therefore fail to load, but cannot run code. Pickle protocols 2 to 5 are
read (the official files are protocol 2).
"""

import re
import struct

import numpy as np

# Names a numpy array (or Python 3 bytes at protocol 2) pickle refers to, by name only.
_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
_FROMBUFFER = {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}
_NDARRAY = ("numpy", "ndarray")
_DTYPE = ("numpy", "dtype")
_CODECS_ENCODE = ("_codecs", "encode")
_BYTES = {("__builtin__", "bytes"), ("builtins", "bytes")}  # b"" at protocol 2
_ALLOWED_GLOBALS = _RECONSTRUCT | _FROMBUFFER | _BYTES | {_NDARRAY, _DTYPE, _CODECS_ENCODE}
# Plain numeric dtypes only: never object arrays.
_DTYPE_CODE = re.compile(r"[<>|=]?(u1|i1|b1|[ui][248]|f[248])")

_MARK = object()


class _Global:
    def __init__(self, module, name):
        self.key = (module, name)


class _PendingArray:
    """`_reconstruct(ndarray, ...)`: the array is filled in by the BUILD that follows."""


class _PendingDtype:
    def __init__(self, code):
        self.code = code
        self.byteorder = None


def read_batch(data, source="batch"):
    """Decodes one CIFAR batch pickle (bytes) into a dict with str keys.

    Raises ValueError naming `source` when the stream holds anything but the
    plain values listed in the module docstring.
    """
    try:
        value = _Decoder(memoryview(data), source).run()
    except BatchRefused:
        raise
    except (struct.error, IndexError, KeyError, ValueError, TypeError, OverflowError) as error:
        raise _refuse(source, f"it is truncated or malformed ({type(error).__name__}: {error})") from None
    if not isinstance(value, dict):
        raise _refuse(source, f"it holds a {type(value).__name__}, not a dict")
    return {key.decode("latin1") if isinstance(key, bytes) else key: item for key, item in value.items()}


class BatchRefused(ValueError):
    """A CIFAR batch that is malformed or holds more than plain values."""


def _refuse(source, reason):
    return BatchRefused(
        f"Invalid value received for argument `data_dir`. Expected a CIFAR-10 python batch "
        f"(a dict of plain values and numeric numpy arrays); {reason}. Nothing in it was run. "
        f"Received: {source}"
    )


class _Decoder:
    def __init__(self, data, source):
        self.data = data
        self.pos = 0
        self.source = source
        self.stack = []
        self.memo = {}
        # Bytes of arrays and strings the decoder may build: a little over the file's own size, so a
        # small file that reuses one memoised buffer for many arrays cannot make it allocate without bound.
        self.budget = 4 * len(data) + (1 << 20)

    # Reading ---------------------------------------------------------------------
    def take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise IndexError("the stream ends early")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def line(self):
        end = bytes(self.data[self.pos : self.pos + 4096]).find(b"\n")
        if end < 0:
            raise IndexError("a text argument has no end of line")
        return bytes(self.take(end + 1)[:-1])

    def pop_mark(self):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is _MARK:
                items = self.stack[i + 1 :]
                del self.stack[i:]
                return items
        raise IndexError("no MARK on the stack")

    # Decoding --------------------------------------------------------------------
    def run(self):
        handlers = _OPCODES
        while True:
            code = self.take(1)[0]
            handler = handlers.get(code)
            if handler is None:
                raise _refuse(self.source, f"it uses pickle opcode {bytes([code])!r} at byte {self.pos - 1}")
            if handler is _stop:
                if len(self.stack) != 1:
                    raise _refuse(self.source, "it does not end with exactly one value")
                return self.finished(self.stack.pop())
            handler(self)

    def finished(self, value):
        pending = [value]
        while pending:  # every nested value, not only the top one
            item = pending.pop()
            if isinstance(item, (_Global, _PendingArray, _PendingDtype)):
                raise _refuse(self.source, "it holds an unfinished object")
            if isinstance(item, dict):
                pending.extend(item.keys())
                pending.extend(item.values())
            elif isinstance(item, (list, tuple)):
                pending.extend(item)
        return value

    def spend(self, size):
        self.budget -= size
        if self.budget < 0:
            raise _refuse(self.source, "it builds more data than the file holds (a crafted file)")

    def push_global(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _refuse(self.source, f"it names {module}.{name}, which a CIFAR batch never holds")
        self.stack.append(_Global(module, name))

    def reduce(self):
        args = self.stack.pop()
        func = self.stack.pop()
        if not isinstance(func, _Global) or not isinstance(args, tuple):
            raise _refuse(self.source, "it calls something other than a numpy array constructor")
        key = func.key
        if key in _RECONSTRUCT and len(args) == 3 and isinstance(args[0], _Global) and args[0].key == _NDARRAY:
            self.stack.append(_PendingArray())
        elif key == _DTYPE and len(args) == 3 and isinstance(args[0], (str, bytes)):
            code = args[0].decode("latin1") if isinstance(args[0], bytes) else args[0]
            if not _DTYPE_CODE.fullmatch(code):
                raise _refuse(self.source, f"it holds an array of dtype {code!r} (only plain numbers are read)")
            self.stack.append(_PendingDtype(code))
        elif key == _CODECS_ENCODE and len(args) == 2 and isinstance(args[0], str) and args[1] == "latin1":
            self.spend(len(args[0]))
            self.stack.append(args[0].encode("latin1"))
        elif key in _BYTES and args == ():
            self.stack.append(b"")
        elif key in _FROMBUFFER and len(args) == 4:
            buffer, dtype, shape, order = args
            self.stack.append(self.array(buffer, dtype, shape, order == "F"))
        else:
            raise _refuse(self.source, f"it calls {key[0]}.{key[1]} with unexpected arguments")

    def build(self):
        state = self.stack.pop()
        target = self.stack[-1] if self.stack else None
        if isinstance(target, _PendingDtype) and isinstance(state, tuple) and len(state) >= 2:
            target.byteorder = state[1].decode("latin1") if isinstance(state[1], bytes) else state[1]
        elif isinstance(target, _PendingArray) and isinstance(state, tuple) and len(state) == 5:
            _, shape, dtype, fortran, raw = state
            if isinstance(raw, str):  # Python 2 files read as text
                self.spend(len(raw))
                raw = raw.encode("latin1")
            built = self.array(raw, dtype, shape, bool(fortran))
            self.stack[-1] = built
            for index, stored in self.memo.items():  # later references get the array, not the placeholder
                if stored is target:
                    self.memo[index] = built
        else:
            raise _refuse(self.source, "it sets the state of something other than a numpy array")

    def array(self, raw, dtype, shape, fortran):
        if not isinstance(dtype, _PendingDtype):
            raise _refuse(self.source, "it holds an array without a plain numeric dtype")
        if not isinstance(raw, (bytes, bytearray)):
            raise _refuse(self.source, "it holds an array whose data are not raw bytes")
        if not (isinstance(shape, tuple) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise _refuse(self.source, f"it holds an array of shape {shape!r}")
        code = dtype.code.lstrip("<>|=")
        order = dtype.byteorder if dtype.byteorder in ("<", ">") else "="
        numpy_dtype = np.dtype(code).newbyteorder(order)
        count = int(np.prod(shape, dtype=np.int64))
        if count * numpy_dtype.itemsize != len(raw):
            raise _refuse(self.source, f"an array of shape {shape} and dtype {code} has {len(raw)} bytes")
        self.spend(2 * len(raw))  # the bytes copy and the native-order array
        values = np.frombuffer(bytes(raw), dtype=numpy_dtype, count=count)
        return values.reshape(shape, order="F" if fortran else "C").astype(numpy_dtype.newbyteorder("="))


def _stop(decoder):  # handled in run()
    raise AssertionError


def _push(value):
    return lambda d: d.stack.append(value)


def _push_read(read):
    return lambda d: d.stack.append(read(d))


def _bytes_of(size_fmt):
    return lambda d: bytes(d.take(d.unpack(size_fmt)))


def _text_of(size_fmt):
    return lambda d: str(d.take(d.unpack(size_fmt)), "utf-8")


def _memo_put(d, index):
    if not d.stack:
        raise IndexError("memo store with an empty stack")
    d.memo[index] = d.stack[-1]


def _memo_get(d, index):
    if index not in d.memo:
        raise IndexError(f"memo entry {index} was never stored")
    d.stack.append(d.memo[index])


def _set_items(d):
    items = d.pop_mark()
    target = d.stack[-1]
    if not isinstance(target, dict) or len(items) % 2:
        raise TypeError("SETITEMS needs a dict and key/value pairs")
    for key, value in zip(items[::2], items[1::2], strict=False):
        target[_hashable(d, key)] = value


def _set_item(d):
    value = d.stack.pop()
    key = d.stack.pop()
    if not isinstance(d.stack[-1], dict):
        raise TypeError("SETITEM needs a dict")
    d.stack[-1][_hashable(d, key)] = value


def _hashable(d, key):
    if not isinstance(key, (bytes, str, int, tuple)):
        raise _refuse(d.source, f"it uses a {type(key).__name__} as a dict key")
    return key


def _append(d):
    value = d.stack.pop()
    if not isinstance(d.stack[-1], list):
        raise TypeError("APPEND needs a list")
    d.stack[-1].append(value)


def _appends(d):
    items = d.pop_mark()
    if not isinstance(d.stack[-1], list):
        raise TypeError("APPENDS needs a list")
    d.stack[-1].extend(items)


def _tuple_n(n):
    def handler(d):
        if len(d.stack) < n or any(item is _MARK for item in d.stack[len(d.stack) - n :]):
            raise IndexError("tuple of missing items")
        items = tuple(d.stack[len(d.stack) - n :]) if n else ()
        del d.stack[len(d.stack) - n :]
        d.stack.append(items)

    return handler


def _global_text(d):
    module = d.line().decode("ascii")
    name = d.line().decode("ascii")
    d.push_global(module, name)


def _stack_global(d):
    name = d.stack.pop()
    module = d.stack.pop()
    if not (isinstance(module, str) and isinstance(name, str)):
        raise TypeError("STACK_GLOBAL needs two names")
    d.push_global(module, name)


def _dict_from_mark(d):
    items = d.pop_mark()
    if len(items) % 2:
        raise TypeError("DICT needs key/value pairs")
    d.stack.append({_hashable(d, k): v for k, v in zip(items[::2], items[1::2], strict=False)})


def _long(size_fmt):
    return lambda d: int.from_bytes(d.take(d.unpack(size_fmt)), "little", signed=True)


_OPCODES = {
    ord("."): _stop,
    0x80: lambda d: d.take(1),  # PROTO
    0x95: lambda d: d.take(8),  # FRAME
    ord("("): _push(_MARK),
    ord("}"): lambda d: d.stack.append({}),
    ord("]"): lambda d: d.stack.append([]),
    ord(")"): _tuple_n(0),
    0x85: _tuple_n(1),
    0x86: _tuple_n(2),
    0x87: _tuple_n(3),
    ord("t"): lambda d: d.stack.append(tuple(d.pop_mark())),
    ord("l"): lambda d: d.stack.append(list(d.pop_mark())),
    ord("d"): _dict_from_mark,
    ord("s"): _set_item,
    ord("u"): _set_items,
    ord("a"): _append,
    ord("e"): _appends,
    ord("0"): lambda d: d.stack.pop(),  # POP
    ord("1"): lambda d: d.pop_mark(),  # POP_MARK
    ord("q"): lambda d: _memo_put(d, d.unpack("<B")),  # BINPUT
    ord("r"): lambda d: _memo_put(d, d.unpack("<I")),  # LONG_BINPUT
    ord("p"): lambda d: _memo_put(d, int(d.line())),  # PUT
    0x94: lambda d: _memo_put(d, len(d.memo)),  # MEMOIZE
    ord("h"): lambda d: _memo_get(d, d.unpack("<B")),  # BINGET
    ord("j"): lambda d: _memo_get(d, d.unpack("<I")),  # LONG_BINGET
    ord("g"): lambda d: _memo_get(d, int(d.line())),  # GET
    ord("K"): _push_read(lambda d: d.unpack("<B")),  # BININT1
    ord("M"): _push_read(lambda d: d.unpack("<H")),  # BININT2
    ord("J"): _push_read(lambda d: d.unpack("<i")),  # BININT
    0x8A: _push_read(_long("<B")),  # LONG1
    0x8B: _push_read(_long("<i")),  # LONG4
    ord("G"): _push_read(lambda d: d.unpack(">d")),  # BINFLOAT
    ord("N"): _push(None),
    0x88: _push(True),
    0x89: _push(False),
    # Python 2 str: bytes (what the stdlib reader gives with encoding="bytes").
    ord("U"): _push_read(_bytes_of("<B")),  # SHORT_BINSTRING
    ord("T"): _push_read(_bytes_of("<i")),  # BINSTRING
    ord("C"): _push_read(_bytes_of("<B")),  # SHORT_BINBYTES
    ord("B"): _push_read(_bytes_of("<I")),  # BINBYTES
    0x8E: _push_read(_bytes_of("<Q")),  # BINBYTES8
    0x96: _push_read(lambda d: bytearray(d.take(d.unpack("<Q")))),  # BYTEARRAY8
    0x8C: _push_read(_text_of("<B")),  # SHORT_BINUNICODE
    ord("X"): _push_read(_text_of("<I")),  # BINUNICODE
    0x8D: _push_read(_text_of("<Q")),  # BINUNICODE8
    ord("c"): _global_text,  # GLOBAL
    0x93: _stack_global,  # STACK_GLOBAL
    ord("R"): lambda d: d.reduce(),  # REDUCE
    ord("b"): lambda d: d.build(),  # BUILD
}
