//! A small eBPF assembler: the instruction encoding of the kernel's
//! `Documentation/bpf/standardization/instruction-set.rst`, with labels for jumps.
//!
//! Only what the forwarding program needs. Each method appends one instruction
//! (`ld_map_fd` two), named after the operation in the kernel's assembly syntax.

/// A register, `r0`–`r10` (`r10` is the read-only frame pointer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg(pub u8);

pub const R0: Reg = Reg(0);
pub const R1: Reg = Reg(1);
pub const R2: Reg = Reg(2);
pub const R3: Reg = Reg(3);
pub const R4: Reg = Reg(4);
pub const R5: Reg = Reg(5);
pub const R6: Reg = Reg(6);
pub const R7: Reg = Reg(7);
pub const R8: Reg = Reg(8);
pub const R9: Reg = Reg(9);
pub const FP: Reg = Reg(10);

/// Access width of loads and stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

impl Size {
    fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::DW => 0x18,
        }
    }
}

/// Conditional jump operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    Eq,
    Ne,
    /// Unsigned `>`.
    Gt,
    /// Unsigned `>=`.
    Ge,
    /// Unsigned `<`.
    Lt,
}

impl Cond {
    fn op(self) -> u8 {
        match self {
            Cond::Eq => 0x10,
            Cond::Gt => 0x20,
            Cond::Ge => 0x30,
            Cond::Ne => 0x50,
            Cond::Lt => 0xa0,
        }
    }
}

/// Arithmetic operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alu {
    Add,
    Sub,
    And,
    Or,
    Lsh,
    Rsh,
    Mov,
}

impl Alu {
    fn op(self) -> u8 {
        match self {
            Alu::Add => 0x00,
            Alu::Sub => 0x10,
            Alu::Or => 0x40,
            Alu::And => 0x50,
            Alu::Lsh => 0x60,
            Alu::Rsh => 0x70,
            Alu::Mov => 0xb0,
        }
    }
}

const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_ALU64: u8 = 0x07;
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const MODE_ATOMIC: u8 = 0xc0;
const SRC_X: u8 = 0x08;
const OP_END: u8 = 0xd0;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;
const OP_JA: u8 = 0x00;
/// `src_reg` of a `ld_imm64` whose immediate is a map file descriptor.
const PSEUDO_MAP_FD: u8 = 1;

/// A jump target, bound once with [`Asm::bind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// An instruction, as the kernel's `struct bpf_insn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// The 8 bytes the kernel reads (little-endian host).
    #[must_use]
    pub fn encode(self) -> u64 {
        u64::from(self.code)
            | u64::from(self.dst & 0xf) << 8
            | u64::from(self.src & 0xf) << 12
            | u64::from(self.off as u16) << 16
            | u64::from(self.imm as u32) << 32
    }
}

/// Program under construction.
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    /// (instruction index, label) of jumps to patch.
    fixups: Vec<(usize, Label)>,
}

/// Errors of [`Asm::finish`]: programming errors in the program text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AsmError {
    #[error("label {0} used but never bound")]
    Unbound(usize),
    #[error("jump from {0} to {1} out of range")]
    Range(usize, usize),
}

impl Asm {
    #[must_use]
    pub fn new() -> Asm {
        Asm::default()
    }

    fn push(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            dst: dst.0,
            src: src.0,
            off,
            imm,
        });
    }

    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `l` to the next instruction.
    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }

    /// `dst = imm` (64-bit, sign-extended).
    pub fn mov_imm(&mut self, dst: Reg, imm: i32) {
        self.push(CLASS_ALU64 | Alu::Mov.op(), dst, R0, 0, imm);
    }
    /// `dst = src`.
    pub fn mov(&mut self, dst: Reg, src: Reg) {
        self.push(CLASS_ALU64 | Alu::Mov.op() | SRC_X, dst, src, 0, 0);
    }
    /// 64-bit `dst op= imm`.
    pub fn alu_imm(&mut self, op: Alu, dst: Reg, imm: i32) {
        self.push(CLASS_ALU64 | op.op(), dst, R0, 0, imm);
    }
    /// 64-bit `dst op= src`.
    pub fn alu(&mut self, op: Alu, dst: Reg, src: Reg) {
        self.push(CLASS_ALU64 | op.op() | SRC_X, dst, src, 0, 0);
    }
    /// 32-bit `dst op= src` (the result is zero-extended: wrapping u32 arithmetic).
    pub fn alu32(&mut self, op: Alu, dst: Reg, src: Reg) {
        self.push(CLASS_ALU | op.op() | SRC_X, dst, src, 0, 0);
    }
    /// Byte swap of the low `bits` (16 or 32) between host (little-endian) and network
    /// order; the rest is cleared.
    pub fn bswap(&mut self, dst: Reg, bits: i32) {
        // BPF_ALU | BPF_END | BPF_TO_BE
        self.push(CLASS_ALU | OP_END | SRC_X, dst, R0, 0, bits);
    }
    /// `dst = *(size *)(src + off)`.
    pub fn ldx(&mut self, size: Size, dst: Reg, src: Reg, off: i16) {
        self.push(CLASS_LDX | MODE_MEM | size.bits(), dst, src, off, 0);
    }
    /// `*(size *)(dst + off) = src`.
    pub fn stx(&mut self, size: Size, dst: Reg, off: i16, src: Reg) {
        self.push(CLASS_STX | MODE_MEM | size.bits(), dst, src, off, 0);
    }
    /// `*(size *)(dst + off) = imm`.
    pub fn st(&mut self, size: Size, dst: Reg, off: i16, imm: i32) {
        self.push(CLASS_ST | MODE_MEM | size.bits(), dst, R0, off, imm);
    }
    /// `lock *(u64 *)(dst + off) += src`.
    pub fn atomic_add64(&mut self, dst: Reg, off: i16, src: Reg) {
        self.push(CLASS_STX | MODE_ATOMIC | Size::DW.bits(), dst, src, off, 0);
    }
    /// `dst = map` (the map's file descriptor, resolved by the kernel at load).
    pub fn ld_map_fd(&mut self, dst: Reg, fd: i32) {
        self.insns.push(Insn {
            code: CLASS_LD | MODE_IMM | Size::DW.bits(),
            dst: dst.0,
            src: PSEUDO_MAP_FD,
            off: 0,
            imm: fd,
        });
        self.insns.push(Insn {
            code: 0,
            dst: 0,
            src: 0,
            off: 0,
            imm: 0,
        });
    }
    /// `if dst cond imm goto l`.
    pub fn jmp_imm(&mut self, cond: Cond, dst: Reg, imm: i32, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.push(CLASS_JMP | cond.op(), dst, R0, 0, imm);
    }
    /// `if dst cond src goto l`.
    pub fn jmp(&mut self, cond: Cond, dst: Reg, src: Reg, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.push(CLASS_JMP | cond.op() | SRC_X, dst, src, 0, 0);
    }
    /// `goto l`.
    pub fn ja(&mut self, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.push(CLASS_JMP | OP_JA, R0, R0, 0, 0);
    }
    /// Calls helper number `id`.
    pub fn call(&mut self, id: i32) {
        self.push(CLASS_JMP | OP_CALL, R0, R0, 0, id);
    }
    pub fn exit(&mut self) {
        self.push(CLASS_JMP | OP_EXIT, R0, R0, 0, 0);
    }

    /// Resolves the jumps.
    pub fn finish(mut self) -> Result<Vec<Insn>, AsmError> {
        for (at, l) in std::mem::take(&mut self.fixups) {
            let to = self.labels[l.0].ok_or(AsmError::Unbound(l.0))?;
            let off = i64::try_from(to).unwrap_or(i64::MAX) - i64::try_from(at).unwrap_or(0) - 1;
            self.insns[at].off = i16::try_from(off).map_err(|_| AsmError::Range(at, to))?;
        }
        Ok(self.insns)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_kernel() {
        // Known encodings (objdump of clang -target bpf output):
        // b7 01 00 00 2a 00 00 00   r1 = 42
        // 61 12 4c 00 00 00 00 00   r2 = *(u32 *)(r1 + 76)
        // 95 00 00 00 00 00 00 00   exit
        let mut a = Asm::new();
        a.mov_imm(R1, 42);
        a.ldx(Size::W, R2, R1, 76);
        a.exit();
        let v: Vec<u64> = a.finish().unwrap().into_iter().map(Insn::encode).collect();
        assert_eq!(v[0].to_le_bytes(), [0xb7, 0x01, 0, 0, 42, 0, 0, 0]);
        assert_eq!(v[1].to_le_bytes(), [0x61, 0x12, 0x4c, 0, 0, 0, 0, 0]);
        assert_eq!(v[2].to_le_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn jumps_resolve_forward_and_backward() {
        let mut a = Asm::new();
        let top = a.label();
        let end = a.label();
        a.bind(top);
        a.jmp_imm(Cond::Eq, R1, 0, end); // 0 -> 3: off 2
        a.mov_imm(R0, 1); // 1
        a.ja(top); // 2 -> 0: off -3
        a.bind(end);
        a.exit(); // 3
        let p = a.finish().unwrap();
        assert_eq!(p[0].off, 2);
        assert_eq!(p[2].off, -3);
        let mut b = Asm::new();
        let l = b.label();
        b.ja(l);
        assert_eq!(b.finish(), Err(AsmError::Unbound(0)));
    }
}
