//! CRC-64/XZ (OSS's `x-oss-hash-crc64ecma`): a streaming digest and `combine`, which gives the
//! CRC of `A ‖ B` from the CRCs of `A` and `B` and the length of `B`.
//!
//! The digest is `crc64fast` (poly `0x42F0E1EBA9EA3693` reflected, init = xorout = all ones;
//! check value `crc("123456789") = 0x995DC9BBDF1939FA`). `combine` is zlib's `crc32_combine`
//! carried over to 64 bits (`shared/reference/oss-upload.md` §2): it applies "append `len2`
//! zero bytes" to `crc1` as a GF(2) matrix raised to a power by squaring, then XORs `crc2`.
//! It lets a multipart upload check the whole object's CRC that Complete answers against the
//! CRCs of its parts, as oss2's `calc_obj_crc_from_parts` does.

use std::fmt;

/// The reflected polynomial.
const POLY_REFLECTED: u64 = 0xC96C_5795_D787_0F42;

/// A 64×64 matrix over GF(2): column `n` is the image of bit `n`.
type Gf2Matrix = [u64; 64];

/// CRC-64/XZ of `data` in one call.
pub fn checksum(data: &[u8]) -> u64 {
    let mut digest = crc64fast::Digest::new();
    digest.write(data);
    digest.sum64()
}

/// The CRC-64/XZ of the concatenation `A ‖ B`, given `crc1 = crc(A)`, `crc2 = crc(B)` and
/// `len2 = B.len()`. `combine(c, crc(""), 0) == c` and `combine(crc(""), c, n) == c`.
pub fn combine(crc1: u64, crc2: u64, len2: u64) -> u64 {
    if len2 == 0 {
        return crc1;
    }
    // The operator for one zero bit: shift right, XOR the polynomial when the low bit was 1.
    let mut op: Gf2Matrix = [0; 64];
    op[0] = POLY_REFLECTED;
    for (n, column) in op.iter_mut().enumerate().skip(1) {
        *column = 1 << (n - 1);
    }
    // Two squarings: the operator for four zero bits. Each loop turn squares once more
    // (8 zero bits = one zero byte, then 2, 4, 8… bytes) and applies it for every set bit of
    // `len2`.
    op = square(&square(&op));
    let mut crc = crc1;
    let mut remaining = len2;
    while remaining != 0 {
        op = square(&op);
        if remaining & 1 == 1 {
            crc = apply(&op, crc);
        }
        remaining >>= 1;
    }
    crc ^ crc2
}

fn apply(matrix: &Gf2Matrix, mut vector: u64) -> u64 {
    let mut sum = 0;
    let mut column = 0;
    while vector != 0 {
        if vector & 1 == 1 {
            sum ^= matrix[column];
        }
        vector >>= 1;
        column += 1;
    }
    sum
}

fn square(matrix: &Gf2Matrix) -> Gf2Matrix {
    std::array::from_fn(|n| apply(matrix, matrix[n]))
}

/// A running CRC-64/XZ with the byte count, for hashing a body as it streams.
#[derive(Clone, Default)]
pub struct Crc64 {
    digest: crc64fast::Digest,
    len: u64,
}

impl Crc64 {
    /// An empty digest (value 0, length 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.digest.write(data);
        self.len += data.len() as u64;
    }

    /// The CRC of everything fed so far.
    pub fn value(&self) -> u64 {
        self.digest.sum64()
    }

    /// How many bytes were fed.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for Crc64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crc64")
            .field("value", &self.value())
            .field("len", &self.len)
            .finish()
    }
}

/// The CRC of an object made of parts `(crc, len)` in order, as OSS computes it for Complete.
///
/// A multipart object has at most two part lengths (the part size and the last part), so the
/// "append `len` zero bytes" operator is built once per length and each part costs one
/// matrix-vector product: 10,000 parts take microseconds, not the seconds that 10,000 calls of
/// `combine` (each squaring its matrices anew) would.
pub fn combine_parts(parts: impl IntoIterator<Item = (u64, u64)>) -> u64 {
    let mut operators: Vec<(u64, Gf2Matrix)> = Vec::with_capacity(2);
    let mut whole = 0;
    for (crc, len) in parts {
        if len == 0 {
            continue;
        }
        let index = match operators.iter().position(|(known, _)| *known == len) {
            Some(index) => index,
            None => {
                operators.push((len, zeros_operator(len)));
                operators.len() - 1
            }
        };
        whole = apply(&operators[index].1, whole) ^ crc;
    }
    whole
}

/// The operator that appends `len` zero bytes to a CRC's register: the product of the
/// one-byte operator's powers `2^k` for the set bits `k` of `len` (powers of one matrix
/// commute, so the order does not matter).
fn zeros_operator(len: u64) -> Gf2Matrix {
    let mut bit: Gf2Matrix = [0; 64];
    bit[0] = POLY_REFLECTED;
    for (n, column) in bit.iter_mut().enumerate().skip(1) {
        *column = 1 << (n - 1);
    }
    // Three squarings: one zero bit → eight zero bits, one byte.
    let mut power = square(&square(&square(&bit)));
    let mut product: Gf2Matrix = std::array::from_fn(|n| 1 << n);
    let mut remaining = len;
    while remaining != 0 {
        if remaining & 1 == 1 {
            product = std::array::from_fn(|n| apply(&power, product[n]));
        }
        remaining >>= 1;
        if remaining != 0 {
            power = square(&power);
        }
    }
    product
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent oracle: the `crc` crate's table implementation.
    fn oracle(data: &[u8]) -> u64 {
        crc::Crc::<u64>::new(&crc::CRC_64_XZ).checksum(data)
    }

    fn part_body(n: u32, size: usize) -> Vec<u8> {
        crate::sim::oss::golden::part_body(n, size)
    }

    #[test]
    fn documented_values() {
        assert_eq!(checksum(b"123456789"), 0x995D_C9BB_DF19_39FA);
        assert_eq!(checksum(b"123456789"), 11_051_210_869_376_104_954);
        assert_eq!(checksum(b"12345"), 6_748_440_630_437_108_969);
        assert_eq!(checksum(b"6789"), 10_278_880_121_275_185_425);
        assert_eq!(
            combine(6_748_440_630_437_108_969, 10_278_880_121_275_185_425, 4),
            11_051_210_869_376_104_954
        );
        assert_eq!(checksum(b""), 0);
    }

    #[test]
    fn empty_sides_are_identities() {
        let c = checksum(b"hello dmstrack\n");
        assert_eq!(combine(c, 0, 0), c);
        assert_eq!(combine(0, c, 15), c);
        assert_eq!(combine_parts([]), 0);
    }

    #[test]
    fn random_splits_of_a_buffer_combine_to_the_whole() {
        let mut rng = fastrand::Rng::with_seed(7);
        let data: Vec<u8> = (0..430_000).map(|_| rng.u8(..)).collect();
        let whole = oracle(&data);
        assert_eq!(checksum(&data), whole);
        for _ in 0..40 {
            let split = rng.usize(..=data.len());
            let (a, b) = data.split_at(split);
            assert_eq!(combine(checksum(a), checksum(b), b.len() as u64), whole);
        }
        // Many parts, as a multipart upload has.
        let mut cuts: Vec<usize> = (0..12).map(|_| rng.usize(..=data.len())).collect();
        cuts.extend([0, data.len()]);
        cuts.sort_unstable();
        let parts = cuts
            .windows(2)
            .map(|w| (checksum(&data[w[0]..w[1]]), (w[1] - w[0]) as u64));
        assert_eq!(combine_parts(parts), whole);
    }

    #[test]
    fn streaming_digest_matches_one_shot() {
        let data = part_body(3, 100_003);
        let mut digest = Crc64::new();
        assert!(digest.is_empty());
        for chunk in data.chunks(4093) {
            digest.update(chunk);
        }
        assert_eq!(digest.value(), oracle(&data));
        assert_eq!(digest.len(), 100_003);
        assert!(format!("{digest:?}").contains("len: 100003"));
    }

    /// Cases computed by oss2's own `Crc64.combine` (crcmod's mkCombineFun).
    #[test]
    fn oss2_combine_cases() {
        #[derive(serde::Deserialize)]
        struct Case {
            data_len: Option<usize>,
            seed: Option<u32>,
            data: Option<String>,
            split: usize,
            crc1: u64,
            crc2: u64,
            len2: u64,
            combined: u64,
            whole: u64,
        }
        #[derive(serde::Deserialize)]
        struct Cases {
            cases: Vec<Case>,
        }
        let path = crate::sim::oss::golden::fixture_dir().join("crc64_combine.json");
        let cases: Cases = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(cases.cases.len() > 20);
        for case in &cases.cases {
            let data = match (&case.data, case.seed, case.data_len) {
                (Some(text), _, _) => text.as_bytes().to_vec(),
                (None, Some(seed), Some(len)) => part_body(seed, len),
                _ => panic!("case without data"),
            };
            let (a, b) = data.split_at(case.split);
            assert_eq!(checksum(a), case.crc1);
            assert_eq!(checksum(b), case.crc2);
            assert_eq!(b.len() as u64, case.len2);
            assert_eq!(checksum(&data), case.whole);
            assert_eq!(combine(case.crc1, case.crc2, case.len2), case.combined);
            assert_eq!(
                combine_parts([(case.crc1, case.split as u64), (case.crc2, case.len2)]),
                case.combined
            );
        }
    }

    /// The shape of a multipart object: equal parts and a shorter last one (the operators are
    /// shared between parts of one length).
    #[test]
    fn equal_parts_and_a_short_last_one_combine_to_the_whole() {
        let data = part_body(11, 1_000_003);
        for part in [1, 7, 4096, 65_536, 333_334, 1_000_003] {
            let parts = data
                .chunks(part)
                .map(|chunk| (checksum(chunk), chunk.len() as u64));
            assert_eq!(combine_parts(parts), oracle(&data), "parts of {part}");
        }
        assert_eq!(
            combine_parts([(0, 0), (checksum(b"abc"), 3), (0, 0)]),
            oracle(b"abc")
        );
    }
}
