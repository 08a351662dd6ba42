//! A tiny Power ISA assembler for the L2 payload: only the instructions the payload uses, each checked against
//! an encoding from the ISA (tests below), and branch targets resolved through labels.

/// General purpose register number.
pub type Reg = u32;

#[derive(Default)]
pub struct Asm {
    words: Vec<u32>,
    labels: Vec<(&'static str, usize)>,
    fixups: Vec<(usize, &'static str, Fix)>,
}

#[derive(Clone, Copy)]
enum Fix {
    /// I-form `b`: 24-bit word offset.
    B,
    /// B-form conditional: 14-bit word offset.
    Bc,
}

fn d_form(op: u32, rt: Reg, ra: Reg, imm: i16) -> u32 {
    (op << 26) | (rt << 21) | (ra << 16) | (imm as u16 as u32)
}

fn ds_form(op: u32, rt: Reg, ra: Reg, ds: i16, xo: u32) -> u32 {
    debug_assert!(ds & 3 == 0);
    (op << 26) | (rt << 21) | (ra << 16) | ((ds as u16 as u32) & 0xfffc) | xo
}

impl Asm {
    pub fn new() -> Self {
        Self::default()
    }

    /// Offset in bytes of the next instruction.
    pub fn here(&self) -> usize {
        self.words.len() * 4
    }

    pub fn label(&mut self, name: &'static str) -> &mut Self {
        self.labels.push((name, self.words.len()));
        self
    }

    pub fn word(&mut self, w: u32) -> &mut Self {
        self.words.push(w);
        self
    }

    /// `addi rt, ra, imm` (ra = 0 reads as zero: `li`).
    pub fn addi(&mut self, rt: Reg, ra: Reg, imm: i16) -> &mut Self {
        self.word(d_form(14, rt, ra, imm))
    }

    pub fn li(&mut self, rt: Reg, imm: i16) -> &mut Self {
        self.addi(rt, 0, imm)
    }

    /// `addis rt, 0, imm` (`lis`).
    pub fn lis(&mut self, rt: Reg, imm: i16) -> &mut Self {
        self.word(d_form(15, rt, 0, imm))
    }

    /// `ori ra, rs, imm`.
    pub fn ori(&mut self, ra: Reg, rs: Reg, imm: u16) -> &mut Self {
        self.word((24 << 26) | (rs << 21) | (ra << 16) | u32::from(imm))
    }

    /// `oris ra, rs, imm`.
    pub fn oris(&mut self, ra: Reg, rs: Reg, imm: u16) -> &mut Self {
        self.word((25 << 26) | (rs << 21) | (ra << 16) | u32::from(imm))
    }

    /// `rldicr ra, rs, sh, me` with sh = 32, me = 31: shift left by 32 (`sldi ra, rs, 32`).
    pub fn sldi32(&mut self, ra: Reg, rs: Reg) -> &mut Self {
        // MD-form: op 30, sh[0:4] in bits 16-20, me in 21-26 (split), xo 1, sh[5] in bit 30.
        let sh = 32u32;
        let me = 31u32;
        let me_field = ((me & 0x1f) << 1) | (me >> 5);
        self.word(
            (30 << 26) | (rs << 21) | (ra << 16) | ((sh & 0x1f) << 11) | (me_field << 5) | (1 << 2) | ((sh >> 5) << 1),
        )
    }

    /// Loads a 64-bit constant into `rt` (5 instructions).
    pub fn li64(&mut self, rt: Reg, v: u64) -> &mut Self {
        self.lis(rt, (v >> 48) as u16 as i16)
            .ori(rt, rt, (v >> 32) as u16)
            .sldi32(rt, rt)
            .oris(rt, rt, (v >> 16) as u16)
            .ori(rt, rt, v as u16)
    }

    pub fn ld(&mut self, rt: Reg, ds: i16, ra: Reg) -> &mut Self {
        self.word(ds_form(58, rt, ra, ds, 0))
    }

    pub fn std(&mut self, rs: Reg, ds: i16, ra: Reg) -> &mut Self {
        self.word(ds_form(62, rs, ra, ds, 0))
    }

    /// `cmpdi cr0, ra, imm`.
    pub fn cmpdi(&mut self, ra: Reg, imm: i16) -> &mut Self {
        self.word((11 << 26) | (1 << 21) | (ra << 16) | (imm as u16 as u32))
    }

    /// `beq cr0, label`.
    pub fn beq(&mut self, label: &'static str) -> &mut Self {
        self.fixups.push((self.words.len(), label, Fix::Bc));
        self.word((16 << 26) | (12 << 21) | (2 << 16))
    }

    /// `b label`.
    pub fn b(&mut self, label: &'static str) -> &mut Self {
        self.fixups.push((self.words.len(), label, Fix::B));
        self.word(18 << 26)
    }

    /// `sc 1`: a hypercall.
    pub fn hcall(&mut self) -> &mut Self {
        self.word(0x4400_0022)
    }

    /// `mftb rt` (mfspr rt, 268).
    pub fn mftb(&mut self, rt: Reg) -> &mut Self {
        let spr = 268u32;
        let f = ((spr & 0x1f) << 5) | (spr >> 5);
        self.word((31 << 26) | (rt << 21) | (f << 11) | (339 << 1))
    }

    /// Resolves labels; returns the little-endian machine code.
    pub fn finish(&self) -> Result<Vec<u8>, String> {
        let mut w = self.words.clone();
        for &(at, name, kind) in &self.fixups {
            let target =
                self.labels.iter().find(|(n, _)| *n == name).ok_or_else(|| format!("undefined label {name}"))?.1;
            let off = (target as i64 - at as i64) * 4;
            match kind {
                Fix::B => {
                    if !(-(1 << 25)..(1 << 25)).contains(&off) {
                        return Err(format!("branch to {name} out of range"));
                    }
                    w[at] |= (off as u32) & 0x03ff_fffc;
                }
                Fix::Bc => {
                    if !(-(1 << 15)..(1 << 15)).contains(&off) {
                        return Err(format!("branch to {name} out of range"));
                    }
                    w[at] |= (off as u32) & 0xfffc;
                }
            }
        }
        Ok(w.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(f: impl FnOnce(&mut Asm) -> &mut Asm) -> u32 {
        let mut a = Asm::new();
        f(&mut a);
        let b = a.finish().unwrap();
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    // Encodings as printed by objdump for the same instructions (Power ISA 3.0 Book I).
    #[test]
    fn encodings_match_the_isa() {
        assert_eq!(one(|a| a.li(3, 1)), 0x3860_0001);
        assert_eq!(one(|a| a.li(4, -1)), 0x3880_ffff);
        assert_eq!(one(|a| a.lis(9, 0x4000)), 0x3d20_4000);
        assert_eq!(one(|a| a.ori(9, 9, 0x1234)), 0x6129_1234);
        assert_eq!(one(|a| a.oris(9, 9, 0x1234)), 0x6529_1234);
        assert_eq!(one(|a| a.ld(3, 8, 22)), 0xe876_0008);
        assert_eq!(one(|a| a.std(3, 48, 22)), 0xf876_0030);
        assert_eq!(one(|a| a.cmpdi(21, 0)), 0x2c35_0000);
        assert_eq!(one(|a| a.hcall()), 0x4400_0022);
        assert_eq!(one(|a| a.mftb(5)), 0x7cac_42a6);
        // sldi r9,r9,32 = rldicr r9,r9,32,31
        assert_eq!(one(|a| a.sldi32(9, 9)), 0x7929_07c6);
    }

    #[test]
    fn branches_resolve() {
        let mut a = Asm::new();
        a.label("top").li(3, 0).beq("end").b("top").label("end");
        let b = a.finish().unwrap();
        let w: Vec<u32> = b.chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(w[1], 0x4182_0008); // beq +8
        assert_eq!(w[2], 0x4bff_fff8); // b -8
        assert!(Asm::new().b("nowhere").finish().is_err());
    }
}
