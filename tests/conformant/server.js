// A conformant OPC UA server (node-opcua, independent of asyncua) for gridgate's driver tests.
//
// asyncua's server is not a faithful peer for data-change filters: its absolute deadband compares
// with the previous sample, not the last reported value; status-only changes are suppressed on
// filtered items; percent deadband is missing. This server serves four variables in namespace
// urn:gridgate:conformant and takes changes as JSON lines on stdin:
//   {"node": "Flow", "value": 10.4}            a new value, status Good
//   {"node": "State", "status": "UncertainLastUsableValue"}   same value, new status
// A read-only variable Setpoint is set only through the method SetSetpoint(value Double, ramp_s
// UInt32) on the Plant object; node-opcua checks the arguments' number and types itself, and the
// method refuses a value outside -1000..1000 with BadOutOfRange.
// It prints "ready" once listening on the port given as its only argument.
"use strict";
const readline = require("readline");
const { OPCUAServer } = require("node-opcua-server");
const { MessageSecurityMode, SecurityPolicy } = require("node-opcua-secure-channel");
const { StatusCodes } = require("node-opcua-status-code");
const { DataType, Variant } = require("node-opcua-variant");

async function main() {
    const port = parseInt(process.argv[2], 10);
    const server = new OPCUAServer({
        port, allowAnonymous: true, securityPolicies: [SecurityPolicy.None],
        securityModes: [MessageSecurityMode.None], buildInfo: { productName: "gridgate-conformant" },
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.registerNamespace("urn:gridgate:conformant");
    const plant = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, nodeId: "s=Plant", browseName: "Plant" });
    const nodes = {
        Level: ns.addAnalogDataItem({ componentOf: plant, nodeId: "s=Level", browseName: "Level", dataType: "Double",
                                      engineeringUnitsRange: { low: 0, high: 100 } }),
        Flow: ns.addVariable({ componentOf: plant, nodeId: "s=Flow", browseName: "Flow", dataType: "Double" }),
        State: ns.addVariable({ componentOf: plant, nodeId: "s=State", browseName: "State", dataType: "Double" }),
    };
    nodes.Setpoint = ns.addVariable({ componentOf: plant, nodeId: "s=Setpoint", browseName: "Setpoint",
                                      dataType: "Double", accessLevel: "CurrentRead", userAccessLevel: "CurrentRead" });
    const setSetpoint = ns.addMethod(plant, {
        nodeId: "s=SetSetpoint", browseName: "SetSetpoint",
        inputArguments: [{ name: "value", dataType: DataType.Double }, { name: "ramp_s", dataType: DataType.UInt32 }],
        outputArguments: [],
    });
    setSetpoint.bindMethod(async (inputArguments, context) => {  // two parameters: the promise form
        const value = inputArguments[0].value;
        if (value < -1000 || value > 1000) return { statusCode: StatusCodes.BadOutOfRange };
        current.Setpoint = value;
        nodes.Setpoint.setValueFromSource(new Variant({ dataType: DataType.Double, value }), StatusCodes.Good);
        return { statusCode: StatusCodes.Good, outputArguments: [] };
    });
    const current = { Level: 50, Flow: 10, State: 5, Setpoint: 0 };
    for (const [name, node] of Object.entries(nodes)) {
        node.setValueFromSource(new Variant({ dataType: DataType.Double, value: current[name] }), StatusCodes.Good);
    }
    readline.createInterface({ input: process.stdin }).on("line", (line) => {
        const change = JSON.parse(line);
        if (change.value !== undefined) current[change.node] = change.value;
        const status = change.status ? StatusCodes[change.status] : StatusCodes.Good;
        nodes[change.node].setValueFromSource(new Variant({ dataType: DataType.Double, value: current[change.node] }), status);
    });
    await server.start();
    console.log("ready");
}

main().catch((error) => { console.error(error); process.exit(1); });
