//! The Extended System Description Table (ACPI 6.5, 5.2.8): the list of 64-bit addresses of every other
//! table except the DSDT (which the FADT points at) and the FACS (which a hardware-reduced machine lacks).

use super::{new_sdt, HEADER_LEN};

/// XSDT revision (ACPI 6.5, table 5.7).
const XSDT_REVISION: u8 = 1;

/// The XSDT listing the tables at guest physical addresses `tables`, in that order.
///
/// Built on `Sdt` rather than `acpi_tables::xsdt::XSDT` because the latter fixes the creator id.
pub fn xsdt(tables: &[u64]) -> Vec<u8> {
    let mut sdt = new_sdt(*b"XSDT", HEADER_LEN, XSDT_REVISION);
    for &addr in tables {
        sdt.append(addr);
    }
    sdt.as_slice().to_vec()
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{assert_header, u64_at};
    use super::*;

    #[test]
    fn entries_follow_the_header() {
        let tables = [0x000e_1000, 0x000e_2000, 0x1_2345_6789];
        let b = xsdt(&tables);
        assert_header(&b, b"XSDT", 1);
        assert_eq!(b.len(), 36 + 8 * 3);
        for (i, addr) in tables.iter().enumerate() {
            assert_eq!(u64_at(&b, 36 + 8 * i), *addr, "entry {i}");
        }
    }

    #[test]
    fn empty_table_is_just_a_header() {
        let b = xsdt(&[]);
        assert_header(&b, b"XSDT", 1);
        assert_eq!(b.len(), 36);
    }
}
