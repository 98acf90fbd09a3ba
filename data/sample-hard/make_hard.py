"""Writes the harder judged queries on the quickstart sample corpus (BEIR layout; corpus.jsonl is a link to
../sample/corpus.jsonl). Queries and judgments were written by hand for `make demo` (README.md); run from
this directory to rewrite queries.jsonl and qrels/test.tsv. Grades: 2 answers the query, 1 partly relevant.
The comment under each query quotes the passage text that its grades rest on; a passage that a query sets
aside ("not X", "rather than X") is not judged relevant to it."""
import json

Q = [
 ("h1", "the oxygen a leaf releases does not come from the carbon dioxide fixed in the Calvin cycle: where does it come from",
  {"bio-1": 2}),
 # bio-1: "the energy splits water molecules, releasing oxygen as a by-product". bio-2 (the Calvin cycle) is
 # what the query sets aside: not judged.
 ("h2", "where does the ATP come from in a green leaf, and where in an animal cell",
  {"bio-2": 2, "bio-3": 2, "bio-1": 1}),
 # bio-2: "ATP and NADPH made by the light reactions of photosynthesis"; bio-3: "Mitochondria produce most of a
 # cell's ATP"; bio-1: light energy into chemical energy, without naming ATP.
 ("h3", "which colours of sunlight power the cycle that builds sugar from carbon dioxide",
  {"bio-1": 2, "bio-2": 1}),
 # bio-1: "Chlorophyll in the chloroplasts absorbs red and blue light"; bio-2: the sugar-building cycle, which
 # runs on the light reactions' products but names no colour.
 ("h4", "in animal cells, what makes the energy carrier that the Calvin cycle spends in plants",
  {"bio-3": 2, "bio-2": 1}),
 # bio-3: "Mitochondria produce most of a cell's ATP"; bio-2: the Calvin cycle uses ATP (made by light reactions).
 ("h5", "how do animal cells, which cannot use sunlight, make their energy",
  {"bio-3": 2}),
 # bio-3: "Mitochondria produce most of a cell's ATP through oxidative phosphorylation."
 ("h6", "DNA outside the main chromosomes that gets passed on, between microbes or from mother to child",
  {"bio-4": 2, "bio-3": 2}),
 # bio-4: bacteria "swapping plasmids that carry resistance genes"; bio-3: "their own small circular genome,
 # inherited from the mother".
 ("h7", "a memory in the body that is kept by cells, not by the brain",
  {"bio-5": 2}),
 # bio-5: "memory B and T cells respond quickly when the real pathogen appears".
 ("h8", "a bee dances straight up the comb: in which direction is the food",
  {"bio-6": 2}),
 # bio-6: the angle relative to vertical encodes the direction of food relative to the sun.
 ("h9", "a device that amplifies light instead of absorbing it as chlorophyll does: how does it work",
  {"phy-6": 2}),
 # phy-6: "A laser amplifies light by stimulated emission in a medium with a population inversion".
 ("h10", "why does airflow peel away from the back of a rounded body",
  {"phy-1": 2, "phy-2": 1}),
 # phy-1: "When the pressure rises along the flow, the layer can separate from the surface"; phy-2: the same
 # boundary layer, as a source of drag.
 ("h11", "does smooth, orderly water flow along a ship's hull rub less than chaotic flow",
  {"phy-2": 2, "phy-1": 1}),
 # phy-2: "A turbulent boundary layer produces more skin friction than a laminar one"; phy-1: what the
 # boundary layer is.
 ("h12", "which thin layer of air causes both the rubbing drag on an airliner and the fierce heating of a re-entry capsule",
  {"phy-2": 2, "phy-4": 2, "phy-1": 1}),
 # phy-2: "Skin friction drag comes from shear stress in the boundary layer"; phy-4: "friction heats the air in
 # the boundary layer"; phy-1: what the boundary layer is, without drag or heating.
 ("h13", "what heats a hypersonic vehicle's skin, if not the shock wave in front of it, and what protects it",
  {"phy-4": 2}),
 # phy-4: "friction heats the air in the boundary layer", "ablative or ceramic thermal protection". phy-3 (the
 # shock wave) is what the query sets aside: not judged.
 ("h14", "not the pressure in your arteries: which drink is brewed by pushing water at many times atmospheric pressure",
  {"food-4": 2}),
 # food-4: espresso, "forcing hot water through finely ground, compacted coffee at about nine bars of pressure"
 # (a bar is about one atmosphere).
 ("h15", "a data structure for fast lookups that does not keep its keys in order",
  {"cs-1": 2}),
 # cs-1: an array indexed by a hash of the key, "constant expected lookup time". cs-2 (sorted keys) is what the
 # query sets aside: not judged.
 ("h16", "how do protocols cope when the network loses messages or a server crashes",
  {"cs-4": 2, "cs-8": 2}),
 # cs-4: slows down on packet loss, AIMD; cs-8: agreement "even when some machines crash". Each answers one half.
 ("h17", "how many of five replicas can go down while the group still agrees on new commands",
  {"cs-8": 2}),
 # cs-8: agreement holds "as long as a majority remains reachable" (two of five may fail).
 ("h18", "besides linear perspective, which mid-fifteenth-century European breakthrough changed how ideas spread",
  {"his-1": 2}),
 # his-1: "Around 1450 Johannes Gutenberg combined movable metal type ...", literacy spread across Europe.
 ("h19", "the material that printed books are made of: how did it first reach the West from China",
  {"his-3": 2, "his-1": 1}),
 # his-3: routes linking China with the Mediterranean, "Silk, spices, paper and ideas travelled along it";
 # his-1: the printed books, without paper.
 ("h20", "a valley crossed by stone arches rather than carved by ice",
  {"his-2": 2}),
 # his-2: "Arches of stone and concrete held the channel up where it crossed valleys."
 ("h21", "what does warming land do to South Asia's rain, and what does a warming sea do to reefs",
  {"geo-2": 2, "geo-4": 2}),
 # geo-2: land heats faster than the ocean, "heavy rain to South Asia"; geo-4: "Warmer seas cause bleaching".
 # Each answers one half.
 ("h22", "why does a loaf's crust brown in the oven but not when the dough is boiled",
  {"food-2": 2}),
 # food-2: browns "toasted bread", "above about 140 degrees Celsius" (boiling water stays at 100).
 ("h23", "what gives coffee beans their roasted taste",
  {"food-2": 2}),
 # food-2: the Maillard reaction browns "roasted coffee, creating hundreds of flavour compounds".
 ("h24", "what happens chemically to a slice of bread in a toaster",
  {"food-2": 2}),
 # food-2: the Maillard reaction between amino acids and sugars browns "toasted bread".
 ("h25", "which kind of food fermentation involves no yeast at all",
  {"food-3": 2}),
 # food-3: sauerkraut and kimchi "are made by lactic acid bacteria that ferment the sugars".
 ("h26", "the gas that yeast gives off in dough: what do plants make from it",
  {"bio-2": 2, "food-1": 2}),
 # food-1: yeast "releases carbon dioxide"; bio-2: RuBisCO "fixes carbon dioxide into three-carbon sugars".
 # Each answers one half.
 ("h27", "what are the two numbers in a reading like 120 over 80",
  {"med-1": 2}),
 # med-1: "written as systolic over diastolic pressure".
 ("h28", "not the history of the Silk Road but the theory: why can both trading partners gain",
  {"eco-2": 2}),
 # eco-2: "two countries both gain from trade when each specializes in what it produces at a lower
 # opportunity cost".
 ("h29", "when the immune system attacks the body's own cells instead of germs, what can it destroy",
  {"med-2": 2}),
 # med-2: "In type 1 diabetes the insulin-producing cells are destroyed by the immune system."
 ("h30", "could Silk Road trade leave both China and Persia better off even if one made everything better",
  {"eco-2": 2, "his-3": 1}),
 # eco-2: both gain from specializing, "even if one is better at everything"; his-3: the Silk Road trade
 # between China and Persia, without the reasoning.
]

if __name__ == "__main__":
    with open("queries.jsonl", "w") as f:
        for qid, text, _ in Q:
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open("qrels/test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, _, rels in Q:
            for pid, g in rels.items():
                f.write(f"{qid}\t{pid}\t{g}\n")
