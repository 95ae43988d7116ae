//! Residents eligible for vaccination (接種対象者), as uploaded by their municipality.

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::ids::{AddresseeNumber, MunicipalityCode, PersonRef, PersonalNumberHash, VoucherNumber, VoucherRef};

/// Text that is personal data (a name, an address): kept as is, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PersonalText(pub String);

impl PersonalText {
    /// The text itself, for the places that are allowed to show it (exports, the owner's reads).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PersonalText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} chars>", self.0.chars().count())
    }
}

/// Sex (性別) as coded in municipal systems: 1 male, 2 female, 9 unknown.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum Sex {
    /// 男 (1, M).
    Male,
    /// 女 (2, F).
    Female,
    /// 不明 (9, U).
    Unknown,
}

impl Sex {
    /// Parses 1/2/9, M/F/U (any case), 男/女/不明.
    pub fn parse(text: &str) -> Option<Sex> {
        match crate::text::to_halfwidth(text.trim()).as_ref() {
            "1" | "M" | "m" | "男" | "male" | "Male" => Some(Sex::Male),
            "2" | "F" | "f" | "女" | "female" | "Female" => Some(Sex::Female),
            "9" | "0" | "U" | "u" | "不明" | "unknown" | "Unknown" => Some(Sex::Unknown),
            _ => None,
        }
    }
    /// The open-data letter: M, F or U.
    pub fn letter(self) -> &'static str {
        match self {
            Sex::Male => "M",
            Sex::Female => "F",
            Sex::Unknown => "U",
        }
    }
    /// The municipal code: 1, 2 or 9.
    pub fn code(self) -> u8 {
        match self {
            Sex::Male => 1,
            Sex::Female => 2,
            Sex::Unknown => 9,
        }
    }
}

/// Resident status (異動事由).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum ResidentStatus {
    /// Living in the municipality.
    Active,
    /// Moved out (転出).
    MovedOut,
    /// Deceased (死亡).
    Deceased,
}

impl ResidentStatus {
    /// Parses an empty cell or 在住/active as active, 転出/moved_out, 死亡/deceased.
    pub fn parse(text: &str) -> Option<ResidentStatus> {
        match text.trim() {
            "" | "0" | "在住" | "active" | "Active" => Some(ResidentStatus::Active),
            "1" | "転出" | "moved_out" | "moved out" | "MovedOut" => Some(ResidentStatus::MovedOut),
            "2" | "死亡" | "deceased" | "Deceased" => Some(ResidentStatus::Deceased),
            _ => None,
        }
    }
    /// A short English name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResidentStatus::Active => "active",
            ResidentStatus::MovedOut => "moved_out",
            ResidentStatus::Deceased => "deceased",
        }
    }
}

/// A person eligible for vaccination, identified by (municipality, addressee number).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Resident {
    /// Municipality and addressee number (個別宛名番号).
    pub person: PersonRef,
    /// The voucher number mailed to the person (券番号).
    pub voucher: VoucherNumber,
    /// Name in kanji (氏名).
    pub name: PersonalText,
    /// Name in kana (氏名カナ).
    pub name_kana: PersonalText,
    /// Birth date (生年月日).
    #[serde(with = "crate::clock::serde_date")]
    pub birth_date: NaiveDate,
    /// Sex (性別).
    pub sex: Sex,
    /// Address (住所), when uploaded.
    pub address: Option<PersonalText>,
    /// The voucher of the municipality the person moved in from (転入前), when known.
    pub previous: Option<VoucherRef>,
    /// Keyed hash of the personal number (個人番号), never the number itself.
    pub personal_number_hash: Option<PersonalNumberHash>,
    /// Status (異動事由).
    pub status: ResidentStatus,
    /// Date the status changed, when not active.
    #[serde(default, with = "crate::clock::serde_date::option")]
    pub status_date: Option<NaiveDate>,
}

impl Resident {
    /// The voucher issued to this resident.
    pub fn voucher_ref(&self) -> VoucherRef {
        VoucherRef { municipality: self.person.municipality, number: self.voucher }
    }
    /// The municipality that uploaded the resident.
    pub fn municipality(&self) -> MunicipalityCode {
        self.person.municipality
    }
    /// The addressee number.
    pub fn addressee(&self) -> &AddresseeNumber {
        &self.person.addressee
    }
}

impl fmt::Debug for Resident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resident")
            .field("person", &self.person)
            .field("voucher", &self.voucher)
            .field("name", &self.name)
            .field("name_kana", &self.name_kana)
            .field("birth_date", &"<redacted>")
            .field("sex", &self.sex)
            .field("address", &self.address.as_ref().map(|_| "<redacted>"))
            .field("previous", &self.previous)
            .field("personal_number_hash", &self.personal_number_hash.map(|_| "<hash>"))
            .field("status", &self.status)
            .finish()
    }
}
