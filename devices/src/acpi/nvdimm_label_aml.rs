//! The ACPI label methods of an NVDIMM device that has a label area (ACPI 6.5, 6.5.10): `_LSI` (Label
//! Storage Information) returns `Package { Status, SizeOfLabelStorageArea, MaxTransferLength }`, `_LSR
//! (Offset, Length)` (Label Storage Read) returns `Package { Status, Buffer }`, and `_LSW (Offset, Length,
//! Buffer)` (Label Storage Write) returns the status, an Integer. Status 0 is success, 1 failure, 2 invalid
//! input (an offset or length outside the area or above the largest transfer); 3, "label storage locked",
//! never happens here.
//!
//! They are the label functions of the Intel `_DSM` family (4 get size, 5 read, 6 write) in the shape
//! the spec gives them, and they reach the same area through the same mailbox: each DIMM's methods are
//! one call of a method of the root device (`NLSI`, `NLSR`, `NLSW`) with the DIMM's handle, in which
//! [`LABEL_METHOD_FLAG`] is set so that the mailbox answers with the codes above and serves the area
//! even when the DIMM's `_DSM` does not offer it (`label-dsm=off`). Those three pack the arguments as
//! the functions take them (offset and length as u32, then a write's data), call `NCAL`, which is
//! serialized and so keeps concurrent callers from sharing the page, and repackage its answer.
//! QEMU (hw/acpi/nvdimm.c) builds its label methods on its `NCAL` the same way.
//!
//! Linux's nfit driver looks for the methods only when a DIMM's command family is not the Intel one, or
//! when `nfit.override_dsm_mask=` keeps it from functions 4-6 (drivers/acpi/nfit/core.c,
//! `acpi_nfit_add_dimm`), so a Linux guest takes the `_DSM` unless told otherwise; see docs/nfit.md.
//!
//! acpi_tables has every operator used here; the tests check their encodings against the spec's.

use acpi_tables::aml::{
    Arg, BufferData, Concat, CreateDWordField, GreaterThan, If, Index, LessThan, Local, Method, MethodCall,
    Mid, Or, Package, Return, SizeOf, Store, Uuid, ONE, ZERO,
};
use acpi_tables::Aml;

use super::{Path4, Raw, DIMM_DSM_UUID};
use crate::acpi::to_bytes;
use crate::nvdimm_dsm::LABEL_METHOD_FLAG;

/// The label methods' "invalid input parameters" status, for the arguments the AML refuses itself.
const LS_INVALID: u8 = 2;
/// Integers above this do not fit the u32 fields of the mailbox call, and must not be cut to fit.
const U32_MAX: u64 = u32::MAX as u64;

const STTS: Path4 = Path4(*b"STTS");
const SLSA: Path4 = Path4(*b"SLSA");
const MAXT: Path4 = Path4(*b"MAXT");
const OFST: Path4 = Path4(*b"OFST");
const TLEN: Path4 = Path4(*b"TLEN");

/// `NCAL (ToUUID (<Intel family>), One, function, input, Arg0)`: Arg0 is the flagged handle each DIMM's
/// method passes.
fn call_ncal(function: u8, input: &dyn Aml) -> Vec<u8> {
    let uuid = Uuid::new(DIMM_DSM_UUID);
    let function = &function;
    to_bytes(&MethodCall::new("NCAL".into(), vec![&uuid, &ONE, function, input, &Arg(0)]))
}

/// `Method (NLSI, 1, Serialized)`: `_LSI` for the DIMM whose flagged handle is Arg0. The mailbox's
/// answer to function 4 is always three u32s, so the fields exist whatever the status.
fn nlsi() -> Vec<u8> {
    let (answer, pkg) = (&Local(0), &Local(1));
    let call = Raw(call_ncal(4, &ZERO));
    let get = Store::new(answer, &call);
    let four = &4u8;
    let eight = &8u8;
    let status = CreateDWordField::new(&STTS, answer, &ZERO);
    let size = CreateDWordField::new(&SLSA, answer, four);
    let max = CreateDWordField::new(&MAXT, answer, eight);
    let empty = Package::new(vec![&ZERO, &ZERO, &ZERO]);
    let make = Store::new(pkg, &empty);
    let two = &2u8;
    let (i0, i1, i2) =
        (Index::new(&ZERO, pkg, &ZERO), Index::new(&ZERO, pkg, &ONE), Index::new(&ZERO, pkg, two));
    let (put0, put1, put2) = (Store::new(&i0, &STTS), Store::new(&i1, &SLSA), Store::new(&i2, &MAXT));
    let ret = Return::new(pkg);
    let body: Vec<&dyn Aml> = vec![&get, &status, &size, &max, &make, &put0, &put1, &put2, &ret];
    to_bytes(&Method::new("NLSI".into(), 1, true, body))
}

/// `If ((Arg1 | Arg2) > 0xFFFFFFFF) { Return (refusal) }`: an offset or length that is no u32.
fn refuse_wide(refusal: &dyn Aml) -> Vec<u8> {
    let either = Or::new(&ZERO, &Arg(1), &Arg(2));
    let wide = GreaterThan::new(&either, &U32_MAX);
    to_bytes(&If::new(&wide, vec![&Return::new(refusal)]))
}

/// The input of functions 5 and 6 up to a write's data, in Local0: offset (Arg1) and length (Arg2) as
/// u32s.
fn offset_and_length() -> Vec<u8> {
    let header = &Local(0);
    let zeros = BufferData::new(vec![0; 8]);
    let four = &4u8;
    let mut out = to_bytes(&Store::new(header, &zeros));
    out.extend(to_bytes(&CreateDWordField::new(&OFST, header, &ZERO)));
    out.extend(to_bytes(&CreateDWordField::new(&TLEN, header, four)));
    out.extend(to_bytes(&Store::new(&OFST, &Arg(1))));
    out.extend(to_bytes(&Store::new(&TLEN, &Arg(2))));
    out
}

/// `Local2 = Package (One) { Zero }; Local2 [Zero] = input`: NCAL's Arg3, a package holding the input
/// buffer. (A package's elements are constants or names, so a computed buffer is stored into it.)
fn input_package(input: &dyn Aml) -> Vec<u8> {
    let pkg = &Local(2);
    let one = Package::new(vec![&ZERO]);
    let element = Index::new(&ZERO, pkg, &ZERO);
    [to_bytes(&Store::new(pkg, &one)), to_bytes(&Store::new(&element, input))].concat()
}

/// `Method (NLSR, 3, Serialized)`: `_LSR (Arg1, Arg2)` for the DIMM whose flagged handle is Arg0. A
/// failed read's answer is the status alone, so its data is an empty buffer.
fn nlsr() -> Vec<u8> {
    let (answer, result) = (&Local(3), &Local(1));
    let empty = BufferData::new(Vec::new());
    let invalid = &LS_INVALID;
    let refused = Package::new(vec![invalid, &empty]);
    let start = Store::new(result, &refused);
    let wide = Raw(refuse_wide(result));
    let header = Raw(offset_and_length());
    let input = Raw(input_package(&Local(0)));
    let call = Raw(call_ncal(5, &Local(2)));
    let get = Store::new(answer, &call);
    let status = CreateDWordField::new(&STTS, answer, &ZERO);
    let i0 = Index::new(&ZERO, result, &ZERO);
    let put_status = Store::new(&i0, &STTS);
    let four = &4u8;
    let data = Mid::new(answer, four, &Arg(2), &ZERO);
    let i1 = Index::new(&ZERO, result, &ONE);
    let put_data = Store::new(&i1, &data);
    let ret = Return::new(result);
    let body: Vec<&dyn Aml> =
        vec![&start, &wide, &header, &input, &get, &status, &put_status, &put_data, &ret];
    to_bytes(&Method::new("NLSR".into(), 3, true, body))
}

/// `Method (NLSW, 4, Serialized)`: `_LSW (Arg1, Arg2, Arg3)` for the DIMM whose flagged handle is Arg0.
/// A buffer shorter than the length is refused here: the mailbox would see the rest of the page as data.
fn nlsw() -> Vec<u8> {
    let answer = &Local(3);
    let invalid = &LS_INVALID;
    let wide = Raw(refuse_wide(invalid));
    let arg_data = &Arg(3);
    let data_size = SizeOf::new(arg_data);
    let short = LessThan::new(&data_size, &Arg(2));
    let ret_invalid = Return::new(invalid);
    let refuse_short = If::new(&short, vec![&ret_invalid]);
    let header = Raw(offset_and_length());
    let joined = Concat::new(&ZERO, &Local(0), arg_data);
    let input = Raw(input_package(&joined));
    let call = Raw(call_ncal(6, &Local(2)));
    let get = Store::new(answer, &call);
    let status = CreateDWordField::new(&STTS, answer, &ZERO);
    let ret = Return::new(&STTS);
    let body: Vec<&dyn Aml> = vec![&wide, &refuse_short, &header, &input, &get, &status, &ret];
    to_bytes(&Method::new("NLSW".into(), 4, true, body))
}

/// The root device's `NLSI`, `NLSR` and `NLSW`, which the DIMMs' label methods call.
pub(super) fn label_method_helpers() -> Vec<u8> {
    [nlsi(), nlsr(), nlsw()].concat()
}

/// A DIMM's `_LSI`, `_LSR` and `_LSW`: `Return (NLSx (<handle | flag>, Arg0, ...))`.
pub(super) fn dimm_label_methods(handle: u32) -> Vec<u8> {
    let flagged = &(handle | LABEL_METHOD_FLAG);
    let method = |name: &str, helper: &str, args: u8| {
        let mut call_args: Vec<&dyn Aml> = vec![flagged];
        let arg_objects = [Arg(0), Arg(1), Arg(2)];
        call_args.extend(arg_objects[..args as usize].iter().map(|a| a as &dyn Aml));
        let call = MethodCall::new(helper.into(), call_args);
        to_bytes(&Method::new(name.into(), args, false, vec![&Return::new(&call)]))
    };
    [method("_LSI", "NLSI", 0), method("_LSR", "NLSR", 2), method("_LSW", "NLSW", 3)].concat()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::process::Command;

    use acpi_tables::aml::{
        Arg, BufferData, Concat, CreateDWordField, GreaterThan, Index, LessThan, Local, Method, Mid, Or,
        Package, SizeOf, ONE, ZERO,
    };

    use super::super::super::test_util::{find, labelled, pkg_length, region};
    use super::super::super::{dsdt, DsdtConfig};
    use super::super::nvdimm_root_aml;
    use super::*;

    /// The operators the methods use, against the encodings of ACPI 6.5, 20.2.5 (Local0-7 are
    /// 0x60-0x67, Arg0-6 0x68-0x6e, ZeroOp 0x00 as a Target is NullName).
    #[test]
    fn the_operators_encode_as_the_spec_says() {
        let name = Path4(*b"STTS");
        // DefCreateDWordField := CreateDWordFieldOp(0x8A) SourceBuff ByteIndex NameString
        assert_eq!(to_bytes(&CreateDWordField::new(&name, &Local(0), &4u8)), b"\x8a\x60\x0a\x04STTS");
        // DefConcat := ConcatOp(0x73) Data Data Target
        assert_eq!(to_bytes(&Concat::new(&ZERO, &Local(0), &Arg(3))), [0x73, 0x60, 0x6b, 0x00]);
        // DefOr := OrOp(0x7D) Operand Operand Target
        assert_eq!(to_bytes(&Or::new(&ZERO, &Arg(1), &Arg(2))), [0x7d, 0x69, 0x6a, 0x00]);
        // DefLGreater := LGreaterOp(0x94) Operand Operand; DefLLess := LLessOp(0x95) Operand Operand
        assert_eq!(
            to_bytes(&GreaterThan::new(&Arg(1), &U32_MAX)),
            [0x94, 0x69, 0x0c, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(to_bytes(&LessThan::new(&Local(1), &Arg(2))), [0x95, 0x61, 0x6a]);
        // DefSizeOf := SizeOfOp(0x87) SuperName
        assert_eq!(to_bytes(&SizeOf::new(&Arg(3))), [0x87, 0x6b]);
        // DefIndex := IndexOp(0x88) BuffPkgStrObj IndexValue Target
        assert_eq!(to_bytes(&Index::new(&ZERO, &Local(1), &ONE)), [0x88, 0x61, 0x01, 0x00]);
        // DefMid := MidOp(0x9E) MidObj TermArg TermArg Target
        assert_eq!(
            to_bytes(&Mid::new(&Local(3), &4u8, &Arg(2), &ZERO)),
            [0x9e, 0x63, 0x0a, 0x04, 0x6a, 0x00]
        );
        // DefPackage := PackageOp(0x12) PkgLength NumElements PackageElementList
        assert_eq!(
            to_bytes(&Package::new(vec![&2u8, &BufferData::new(vec![])])),
            [0x12, 0x07, 0x02, 0x0a, 0x02, 0x11, 0x02, 0x00]
        );
        // DefBuffer := BufferOp(0x11) PkgLength BufferSize ByteList
        assert_eq!(to_bytes(&BufferData::new(vec![0; 2])), [0x11, 0x05, 0x0a, 0x02, 0x00, 0x00]);
        // DefMethod := MethodOp(0x14) PkgLength NameString MethodFlags(args | serialized << 3) TermList
        assert_eq!(to_bytes(&Method::new("NLSR".into(), 3, true, vec![])), b"\x14\x06NLSR\x0b");
    }

    /// `Method (name, args, NotSerialized) { Return (helper (<handle | flag>, Arg0 ...)) }`.
    fn wrapper_bytes(name: &[u8; 4], helper: &[u8; 4], args: u8, handle: u32) -> Vec<u8> {
        let mut body = [&name[..], &[args, 0xa4], helper, &[0x0c]].concat();
        body.extend((handle | LABEL_METHOD_FLAG).to_le_bytes());
        body.extend((0..args).map(|a| 0x68 + a));
        [vec![0x14, body.len() as u8 + 1], body].concat()
    }

    #[test]
    fn each_dimm_method_calls_its_helper_with_the_flagged_handle() {
        for handle in [1, 2, 0x100] {
            let expected = [
                wrapper_bytes(b"_LSI", b"NLSI", 0, handle),
                wrapper_bytes(b"_LSR", b"NLSR", 2, handle),
                wrapper_bytes(b"_LSW", b"NLSW", 3, handle),
            ]
            .concat();
            assert_eq!(dimm_label_methods(handle), expected, "handle {handle}");
        }
        assert_eq!(LABEL_METHOD_FLAG, 0x8000_0000, "the reserved top bit of an NFIT device handle");
    }

    /// The helper method `name` in `aml`: its flags and its term list.
    fn method<'a>(aml: &'a [u8], name: &[u8; 4]) -> (u8, &'a [u8]) {
        let at = (1..aml.len() - 4)
            .find(|&i| {
                aml[i..i + 4] == name[..]
                    && (1..=2).any(|used| {
                        i > used && aml[i - used - 1] == 0x14 && pkg_length(&aml[i - used..]).1 == used
                    })
            })
            .unwrap_or_else(|| panic!("no method {}", String::from_utf8_lossy(name)));
        let used = (1..=2)
            .find(|&used| aml[at - used - 1] == 0x14 && pkg_length(&aml[at - used..]).1 == used)
            .unwrap();
        let (len, _) = pkg_length(&aml[at - used..]);
        (aml[at + 4], &aml[at + 5..at - used + len])
    }

    #[test]
    fn the_helpers_are_serialized_and_call_ncal_with_functions_4_5_6() {
        let aml = label_method_helpers();
        let uuid = to_bytes(&Uuid::new(DIMM_DSM_UUID));
        for (name, args, function, input) in
            [(b"NLSI", 1, 4u8, &[0x00][..]), (b"NLSR", 3, 5, &[0x62][..]), (b"NLSW", 4, 6, &[0x62][..])]
        {
            let (flags, body) = method(&aml, name);
            assert_eq!(flags, args | 0x08, "{}: serialized, like NCAL", String::from_utf8_lossy(name));
            // NCAL (uuid, One, function, input, Arg0)
            let call = [&b"NCAL"[..], &uuid, &[0x01, 0x0a, function], input, &[0x68]].concat();
            assert!(find(body, &call).is_some(), "{}", String::from_utf8_lossy(name));
        }
        // The status is the answer's first u32, in each helper: CreateDWordField (Local0/3, Zero, STTS).
        assert_eq!(aml.windows(8).filter(|w| w[0] == 0x8a && w[2] == 0x00 && &w[3..7] == b"STTS").count(), 3);
    }

    fn run(what: &str, cmd: &mut Command) -> String {
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("cannot run {what} ({e}): install acpica-tools (scripts/setup-host.sh does)")
        });
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{what}: {text}");
        text
    }

    /// A DSDT with two NVDIMMs, the first with a label area, in a fresh directory.
    fn dsdt_file(tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("daxvmm-label-aml-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let aml = nvdimm_root_aml(&[labelled(0), region(1)]);
        let file = dir.join("dsdt.dat");
        std::fs::write(&file, dsdt(&DsdtConfig { extra_sb_aml: aml, ..Default::default() })).unwrap();
        (dir, file)
    }

    /// ACPICA's disassembler reads the methods without an error or a warning, as the ASL below.
    #[test]
    fn iasl_disassembles_the_label_methods() {
        let (dir, file) = dsdt_file("iasl");
        let text = run("iasl -d", Command::new("iasl").arg("-d").arg(&file).current_dir(&dir));
        assert!(!text.contains("Error") && !text.contains("Warning"), "iasl -d: {text}");
        let dsl = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap();
        for want in [
            "Method (NLSI, 1, Serialized)",
            "Method (NLSR, 3, Serialized)",
            "Method (NLSW, 4, Serialized)",
            "If (((Arg1 | Arg2) > 0xFFFFFFFF))",
            "If ((SizeOf (Arg3) < Arg2))",
            "Local2 [Zero] = Concatenate (Local0, Arg3)",
            "Local1 [One] = Mid (Local3, 0x04, Arg2)",
            "Method (_LSI, 0, NotSerialized)  // _LSI: Label Storage Information",
            "Method (_LSR, 2, NotSerialized)  // _LSR: Label Storage Read",
            "Method (_LSW, 3, NotSerialized)  // _LSW: Label Storage Write",
            "Return (NLSI (0x80000001))",
            "Return (NLSR (0x80000001, Arg0, Arg1))",
            "Return (NLSW (0x80000001, Arg0, Arg1, Arg2))",
        ] {
            assert!(dsl.contains(want), "the DSDT must have '{want}': {dsl}");
        }
        for (n, function) in [(4, "0x04, Zero, Arg0"), (5, "0x05, Local2, Arg0"), (6, "0x06, Local2, Arg0")] {
            let call = format!("NCAL (ToUUID (\"4309ac30-0d11-11e4-9191-0800200c9a66\") /* Unknown UUID */, One, {function})");
            assert!(dsl.contains(&call), "function {n}: {dsl}");
        }
        assert_eq!(dsl.matches("Method (_LS").count(), 3, "only the DIMM with labels has them: {dsl}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The evaluations' results in acpiexec's output, in order: the lines after each "Evaluation of".
    fn results(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if line.starts_with("Evaluation of ") {
                let mut result = String::new();
                while let Some(l) = lines.next_if(|l| !l.trim().is_empty() && !l.starts_with("Evaluat")) {
                    result.push_str(l.trim());
                    result.push('\n');
                }
                out.push(result);
            }
        }
        out
    }

    /// ACPICA's interpreter (Linux's) runs the methods, checking the predefined names' argument and result
    /// types, with the mailbox page as plain memory: the calls they leave in the page are what the device
    /// gets. An answer there is the call itself (RLEN reads the handle, so the whole page comes back, its
    /// first u32 the revision), which the methods repackage as they would a real one.
    #[test]
    fn acpiexec_runs_the_label_methods() {
        let (dir, file) = dsdt_file("acpiexec");
        let nv = "\\_SB.NVDR";
        let page = format!("evaluate {nv}.HDLE; evaluate {nv}.REVS; evaluate {nv}.FUNC; evaluate {nv}.FARG");
        let script = [
            format!("evaluate {nv}.NV00._LSI"),
            page.clone(),
            format!("evaluate {nv}.NV00._LSR 0x1000 0x10"),
            page.clone(),
            format!("evaluate {nv}.NV00._LSW 0x20 0x4 (01 02 03 04)"),
            page,
            // Arguments the AML refuses itself, with "invalid input".
            format!("evaluate {nv}.NV00._LSR 0x100000000 0x10"),
            format!("evaluate {nv}.NV00._LSW 0 0x100000000 (01)"),
            format!("evaluate {nv}.NV00._LSW 0 8 (01 02)"),
        ]
        .join("; ");
        let text = run("acpiexec", Command::new("acpiexec").args(["-b", &script]).arg(&file));
        // A result of the wrong type would show as a warning, or as a repair ACPICA made.
        for bad in ["Error", "Warning", "AE_", "nsrepair"] {
            assert!(!text.contains(bad), "acpiexec: {text}");
        }
        let r = results(&text);
        assert_eq!(r.len(), 18, "{text}");
        let int = |v: u64| format!("[Integer] = {v:016X}\n");
        let page = |i: usize, function: u64, farg: &str| {
            assert_eq!(r[i], int(0x8000_0001), "the flagged handle: {text}");
            assert_eq!(r[i + 1], int(1), "revision 1: {text}");
            assert_eq!(r[i + 2], int(function), "{text}");
            assert!(r[i + 3].starts_with("[Buffer] Length FF4 =\n"), "FARG: {text}");
            assert!(r[i + 3].contains(&format!("0000: {farg}")), "FARG: {text}");
        };
        assert_eq!(r[0], format!("[Package] Contains 3 Elements:\n{}{}{}", int(1), int(4), int(0)), "{text}");
        page(1, 4, "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00");
        // The answer's data: the page from +8, which holds the function, then the call's input.
        let data = "[Buffer] Length 10 =     0000: 05 00 00 00 00 10 00 00 10 00 00 00 00 00 00 00  // ................\n";
        assert_eq!(r[5], format!("[Package] Contains 2 Elements:\n{}{data}", int(1)), "{text}");
        page(6, 5, "00 10 00 00 10 00 00 00 00 00 00 00 00 00 00 00");
        assert_eq!(r[10], int(1), "{text}");
        page(11, 6, "20 00 00 00 04 00 00 00 01 02 03 04 00 00 00 00");
        assert_eq!(
            r[15],
            format!("[Package] Contains 2 Elements:\n{}[Buffer] Length 00 =\n", int(2)),
            "{text}"
        );
        assert_eq!((&r[16], &r[17]), (&int(2), &int(2)), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
