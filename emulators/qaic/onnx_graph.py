"""What the emulated compiler reads of an ONNX file, stdlib only: the graph's inputs (name, element type, dims),
its nodes' first outputs and the external data files its initializers name. A minimal protobuf wire-format reader
over the few fields of onnx.proto it needs; the weights are skipped, not decoded.

Fields read (onnx.proto): ModelProto.graph = 7; GraphProto.node = 1, initializer = 5, input = 11; NodeProto.output
= 2; TensorProto.name = 8, external_data = 13, data_location = 14; StringStringEntryProto key = 1, value = 2;
ValueInfoProto name = 1,
type = 2; TypeProto.tensor_type = 1; Tensor elem_type = 1, shape = 2; TensorShapeProto.dim = 1; Dimension
dim_value = 1, dim_param = 2.
"""

EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
ELEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}  # by elem_type


class NotOnnx(Exception):
    """The bytes are not a protobuf message of the expected shape."""


def _varint(data, pos):
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise NotOnnx("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def fields(data):
    """(field number, value) of each field of a message: ints for varints, memoryviews for the rest."""
    if isinstance(data, int):
        raise NotOnnx("a number where a message was expected")
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos:pos + size], pos + size
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        else:
            raise NotOnnx(f"wire type {wire}")
        if pos > len(data) or number == 0:
            raise NotOnnx("truncated field")
        yield number, value


def _text(value):
    return bytes(value).decode("utf-8", errors="replace")


def _input(value_info):
    name, elem, dims = "", 0, []
    for number, value in fields(value_info):
        if number == 1:
            name = _text(value)
        elif number == 2:
            for t_number, tensor in fields(value):
                if t_number != 1:
                    continue
                for n, v in fields(tensor):
                    if n == 1:
                        elem = v
                    elif n == 2:
                        dims = [_dim(dim) for d_number, dim in fields(v) if d_number == 1]
    return {"name": name, "elem_type": elem, "dims": dims}


def _dim(dimension):
    """An int for a fixed size, a str for a symbol, None for neither."""
    for number, value in fields(dimension):
        if number == 1 and value > 0:
            return value
        if number == 2:
            return _text(value)
    return None


def _initializer(tensor):
    name, location, external = "", None, False
    for number, value in fields(tensor):
        if number == 8:
            name = _text(value)
        elif number == 14:
            external = value == EXTERNAL
        elif number == 13:
            entry = dict(fields(value))
            if _text(entry.get(1, b"")) == "location":
                location = _text(entry.get(2, b""))
    return name, location if external else None


def read_graph(path):
    """{"inputs": [{"name", "elem_type", "dims"}], "external_data": [file names], "node_outputs": [each node's first
    output]} of the model at ``path``, the inputs that are initializers left out; None when the file holds no ONNX
    graph."""
    with open(path, "rb") as fh:
        data = memoryview(fh.read())
    try:
        graph = next((value for number, value in fields(data) if number == 7 and not isinstance(value, int)), None)
        if graph is None:
            return None
        inputs, initializers, external, node_outputs = [], set(), [], []
        for number, value in fields(graph):
            if number == 11:
                inputs.append(_input(value))
            elif number == 1:  # NodeProto: output = 2
                node_outputs += [_text(v) for n, v in fields(value) if n == 2][:1]
            elif number == 5:
                name, location = _initializer(value)
                initializers.add(name)
                if location and location not in external:
                    external.append(location)
    except NotOnnx:
        return None
    return {"inputs": [i for i in inputs if i["name"] not in initializers], "external_data": external,
            "node_outputs": node_outputs}


def symbols(graph):
    """Every symbolic dimension of the graph's inputs, in order."""
    return list(dict.fromkeys(d for i in graph["inputs"] for d in i["dims"] if isinstance(d, str)))


def batch_symbol(graph, defined):
    """Of the defined symbols every input with a symbolic dimension carries, one that leads an input (else the
    first defined); None when there is none."""
    symbolic = [set(d for d in i["dims"] if isinstance(d, str)) for i in graph["inputs"]]
    symbolic = [s for s in symbolic if s]
    carried = [name for name in defined if symbolic and all(name in s for s in symbolic)]
    leading = [name for name in carried if any(i["dims"][:1] == [name] for i in graph["inputs"])]
    return (leading or carried or [None])[0]


def resolved_inputs(graph, defined):
    """The inputs with defined symbols replaced by their sizes (what the compiled program takes)."""
    return [{"name": i["name"], "elem_type": i["elem_type"],
             "dims": [defined.get(d, d) if isinstance(d, str) else d for d in i["dims"]]} for i in graph["inputs"]]


def byte_size(spec):
    """Bytes of one input of a compiled program, or None where a size or the element size is unknown."""
    size = ELEM_BYTES.get(spec["elem_type"])
    for dim in spec["dims"]:
        if not isinstance(dim, int) or size is None:
            return None
        size *= dim
    return size
